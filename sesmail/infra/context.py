"""The account, region and partition the stack deploys into, looked up once at program time."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from sesmail import names


class UnsupportedRegionError(pulumi.RunError):
    """The stack's region has no SES email receiving; nothing would ever arrive there."""


def check_receiving_region(region: str) -> str:
    """Refuse, before anything is created, a region where SES cannot receive mail.

    AWS would accept most of the graph and only fail at the receipt rule set (or, worse, SES
    sending works there and the mistake shows up as mail that never arrives).
    """
    choose = f"Choose one of: {', '.join(names.SUPPORTED_REGIONS)} (e.g. `pulumi config set aws:region us-east-1`)."
    if region in names.SES_OPT_IN_REGIONS:
        raise UnsupportedRegionError(
            f"AWS region {region!r} is an opt-in region, and SES's S3 action cannot store mail in a bucket "
            f"there, so ses-mail cannot run there. {choose}"
        )
    if region not in names.SUPPORTED_REGIONS:
        raise UnsupportedRegionError(
            f"AWS region {region!r} has no SES email receiving, so ses-mail cannot run there. {choose}"
        )
    return region


@dataclass(frozen=True)
class AwsContext:
    account_id: str
    region: str
    partition: str

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.account_id}:{resource}"


def lookup() -> AwsContext:
    """Ask the AWS provider (its credentials and ``aws:region``) where we deploy.

    Plain strings rather than Outputs: the policies that must exist *before* the resources they
    name (bucket and topic policies naming the receipt rule) are built from them.
    """
    region = check_receiving_region(aws.get_region().region)
    identity = aws.get_caller_identity()
    partition = aws.get_partition()
    return AwsContext(account_id=identity.account_id, region=region, partition=partition.partition)
