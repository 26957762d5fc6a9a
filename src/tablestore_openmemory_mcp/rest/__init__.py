"""The REST API (``/api/v1``) and its OpenAPI document: the owner's view of their memories."""
