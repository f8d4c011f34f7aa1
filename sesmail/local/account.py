"""The local world's one account: its region, the stack (the environment) and moto's credentials.

Every module of the world (the mocks, the deployment, moto, the operator's CLI) runs in this one
place, so it is named once.
"""

from __future__ import annotations

#: The stack name, which is the environment (``names.*(env)``).
STACK = "test"
REGION = "us-east-1"
#: moto's default account, which its ARNs and queue URLs carry.
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
#: What the world's own boto3 clients sign with (moto accepts any keys).
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
