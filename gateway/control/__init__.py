"""The control API under ``/v0``: HTTP handlers, models, the OpenAPI document and API keys."""
