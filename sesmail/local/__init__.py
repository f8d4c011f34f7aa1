"""A whole ses-mail on one machine, with no AWS account and no network: moto for AWS, a fake Google
on 127.0.0.1, the handlers run from the deployed archive, and the edges (SES, Lambda's SQS poller,
EventBridge, CloudWatch's EMF extraction, the operator). Shared by tests/e2e and
``python -m sesmail.demo``; never shipped to Lambda."""
