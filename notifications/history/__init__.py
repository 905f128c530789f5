"""Reading back: GET /api/notifications (the newest rows plus their cursor) and
pruning the log (retention.py, `manage.py prune_notifications`).
"""
