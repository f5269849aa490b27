"""The small core: digit types, params schema, errors and artifact I/O. Imports nothing above it."""
