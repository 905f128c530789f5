"""JSON arrays cut to a size limit, in order: used where a receiver refuses a larger
message whole (Pushpin's publish endpoint, PostgreSQL's NOTIFY)."""


def joined_under(encoded: list[str], limit: int, start: str, end: str, separator: str) -> list[str]:
    """The encoded items as start + item + separator + item ... + end, as few strings as
    fit `limit` characters each, in order. An item larger than the limit goes alone."""
    empty = len(start) + len(end)
    chunks, chunk, size = [], [], empty
    for item in encoded:
        if chunk and size + len(separator) + len(item) > limit:
            chunks.append(chunk)
            chunk, size = [], empty
        size += (len(separator) if chunk else 0) + len(item)
        chunk.append(item)
    if chunk:
        chunks.append(chunk)
    return [start + separator.join(chunk) + end for chunk in chunks]
