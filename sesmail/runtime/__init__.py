"""The mail path: everything the forwarder, the token monitor and the canary Lambdas import.

Standard library and botocore only (the Lambda Python runtime's packages); never pulumi, never
the operator's CLI. ``sesmail/infra/archive.py`` ships exactly this package, ``sesmail/names.py``
and the handlers (``tests/test_lambda_runtime.py`` imports each handler from its archive alone).
"""
