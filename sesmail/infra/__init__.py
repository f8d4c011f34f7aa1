"""Pulumi components of ses-mail: the only package of the project that imports pulumi.

Deliberately empty of imports, so the pure helpers (``archive``, ``dns``, ``policies``) can be
used by tests and benchmarks without loading the Pulumi SDK, and so this package never ends up in
the Lambda archive by accident (``archive.lambda_source_files`` excludes it).
"""
