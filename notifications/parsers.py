"""The API's JSON parser (settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"])."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with nesting too deep for Python's parser answered as invalid
    JSON (400) instead of a RecursionError (500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
