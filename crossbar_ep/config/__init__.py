"""Experiment files: the schema-backed Config, validation, the builder that turns a Config into objects, generated reference docs."""
