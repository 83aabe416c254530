"""JSON API under ``/api/v1``: thin views over the engine's use cases, described by
OpenAPI (``/api/v1/openapi.json``) generated from the schemas that validate requests."""
