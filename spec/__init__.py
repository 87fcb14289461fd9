"""The protocol spec, its requirement ids and JSON Schemas, shipped as package data (`gymwire spec` prints where)."""
