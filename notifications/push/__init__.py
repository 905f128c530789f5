"""Where a stored event goes out: publish.py, called only after commit, hands it to
Pushpin (pushpin.py), this process's streams (local.py) and the other processes
(redis_fanout.py). Nothing here writes to the database.
"""
