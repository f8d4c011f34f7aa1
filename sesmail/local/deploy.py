"""``pulumi up`` into moto: the real program (``__main__.py``) under Pulumi mocks that create in moto.

:class:`MotoMocks` extends the recording mocks of :mod:`sesmail.local.program`: for every resource
type that carries behaviour in moto (or that a later step reads back) it makes the real API call
against moto's server with the program's inputs and returns moto's own ids, ARNs and URLs as the
resource's outputs. Resources that depend on them therefore get moto's values (the state
machine's definition holds moto's queue URLs and the forwarder's moto ARN, the forwarder's
environment moto's queue URLs, the topics moto's KMS key ...), and so do the stack outputs.

Created in moto: KMS key and alias; S3 bucket, its public access block, encryption,
ownership controls and lifecycle; SNS topics, their policies and subscriptions (moto delivers
SNS to SQS); SQS queues (redrive policy, visibility, retention) and queue policies; SSM parameters
(the placeholders); IAM roles and their inline policies (moto validates the documents); log
groups; both Lambda functions, with the very archive the program builds; the token monitor's
EventBridge rule, target and invoke permission; the state machine with the definition the
program produced; every CloudWatch alarm; the SES identities, DKIM, receipt rule set, rule and the
active rule set (the simulated SES reads its S3 action back from moto).

Recorded only (moto gives them no behaviour worth having here):

* the SQS event source mapping. moto's own mapping invokes the function synchronously inside
  ``SendMessage`` and deletes the whole batch on any non-error answer, ignoring
  ``ReportBatchItemFailures``; :class:`sesmail.local.edges.EventSourceMapping` plays Lambda's poller
  from the recorded configuration instead;
* the bucket policy. moto evaluates bucket policies on object requests, but turns a statement
  whose condition does not hold into an explicit deny whatever its effect, so the TLS-only
  ``Deny ... aws:SecureTransport=false`` statement would deny every request, HTTPS or not
  (moto 5.2.5, ``IAMPolicyStatement.is_action_permitted``). tests/infra checks its content;
* the dashboard and the saved Logs Insights queries.

``call`` answers the provider functions from moto too (STS's caller identity, the region).
"""

from __future__ import annotations

import io
import json
import runpy
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import pulumi
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockCallArgs

from sesmail.local.account import CREDENTIALS, REGION, STACK
from sesmail.local.program import (
    MAIN,
    PROJECT,
    ProgramRun,
    RecordingMocks,
    RecordingMonitor,
    Registration,
    config_strings,
    stack_config,
    unsecret,
)

#: Recorded, not created (see the module docstring).
RECORDED_ONLY = frozenset(
    {
        "aws:lambda/eventSourceMapping:EventSourceMapping",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:cloudwatch/dashboard:Dashboard",
        "aws:cloudwatch/queryDefinition:QueryDefinition",
    }
)

State = tuple[str, dict[str, Any]]


def plain(value: Any) -> Any:
    """Inputs without Pulumi's secret wrappers, numbers as Pulumi sends them (floats) kept."""
    value = unsecret(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _tag_list(tags: Mapping[str, str] | None, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in (tags or {}).items()]


def archive_zip(archive: pulumi.AssetArchive) -> bytes:
    """The Lambda package the program built (``lambda_package.lambda_archive``) as zip bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, asset in sorted(archive.assets.items()):
            if not isinstance(asset, pulumi.FileAsset):
                raise TypeError(f"unexpected asset {name}: {asset!r}")
            bundle.write(str(asset.path), name)
    return buffer.getvalue()


class MotoMocks(RecordingMocks):
    """Records every registration (as the infra tests' mocks do) and creates the real ones in moto."""

    def __init__(self, endpoint_url: str, *, region: str = REGION) -> None:
        self.endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        identity = self.client("sts").get_caller_identity()
        super().__init__(region=region, account_id=identity["Account"], partition=identity["Arn"].split(":")[1])
        self.created: dict[str, list[str]] = {}
        self._creators: dict[str, Callable[[str, dict[str, Any]], State]] = {
            "aws:kms/key:Key": self._kms_key,
            "aws:kms/alias:Alias": self._kms_alias,
            "aws:s3/bucket:Bucket": self._bucket,
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": self._bucket_public_access_block,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
                self._bucket_encryption
            ),
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls": self._bucket_ownership,
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": self._bucket_lifecycle,
            "aws:sns/topic:Topic": self._topic,
            "aws:sns/topicPolicy:TopicPolicy": self._topic_policy,
            "aws:sns/topicSubscription:TopicSubscription": self._subscription,
            "aws:sqs/queue:Queue": self._queue,
            "aws:sqs/queuePolicy:QueuePolicy": self._queue_policy,
            "aws:ssm/parameter:Parameter": self._parameter,
            "aws:iam/role:Role": self._role,
            "aws:iam/rolePolicy:RolePolicy": self._role_policy,
            "aws:cloudwatch/logGroup:LogGroup": self._log_group,
            "aws:lambda/function:Function": self._function,
            "aws:lambda/permission:Permission": self._permission,
            "aws:lambda/functionUrl:FunctionUrl": self._function_url,
            "aws:cloudwatch/eventRule:EventRule": self._event_rule,
            "aws:cloudwatch/eventTarget:EventTarget": self._event_target,
            "aws:sfn/stateMachine:StateMachine": self._state_machine,
            "aws:cloudwatch/metricAlarm:MetricAlarm": self._alarm,
            "aws:ses/domainIdentity:DomainIdentity": self._domain_identity,
            "aws:ses/domainDkim:DomainDkim": self._domain_dkim,
            "aws:ses/receiptRuleSet:ReceiptRuleSet": self._rule_set,
            "aws:ses/receiptRule:ReceiptRule": self._receipt_rule,
            "aws:ses/activeReceiptRuleSet:ActiveReceiptRuleSet": self._active_rule_set,
        }

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint_url, region_name=REGION, **CREDENTIALS
            )
        return self._clients[service]

    # --- the provider functions ---------------------------------------------------------------

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            self.calls.append(args.token)
            identity = self.client("sts").get_caller_identity()
            account = identity["Account"]
            return {"accountId": account, "arn": identity["Arn"], "id": account, "userId": identity["UserId"]}, []
        if args.token == "aws:index/getRegion:getRegion":
            self.calls.append(args.token)
            region = self.client("sts").meta.region_name
            return {"region": region, "name": region, "id": region, "description": region}, []
        return super().call(args)

    # --- resources ----------------------------------------------------------------------------

    def _state(self, typ: str, name: str, inputs: dict[str, Any]) -> State:
        create = self._creators.get(typ)
        if create is None:
            if typ.startswith("aws:") and typ not in RECORDED_ONLY:
                raise AssertionError(f"the program creates {typ} ({name}); decide whether moto should hold it")
            return super()._state(typ, name, inputs)
        resource_id, outputs = create(name, plain(inputs))
        self.created.setdefault(typ, []).append(resource_id)
        return resource_id, {**inputs, **outputs}

    def _kms_key(self, name: str, inputs: dict[str, Any]) -> State:
        kms = self.client("kms")
        key = kms.create_key(
            Description=inputs.get("description", ""),
            Policy=inputs["policy"],
            Tags=_tag_list(inputs.get("tags"), "TagKey", "TagValue"),
        )["KeyMetadata"]
        if inputs.get("enableKeyRotation"):
            kms.enable_key_rotation(KeyId=key["KeyId"])
        return key["KeyId"], {"keyId": key["KeyId"], "arn": key["Arn"]}

    def _kms_alias(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("kms").create_alias(AliasName=inputs["name"], TargetKeyId=inputs["targetKeyId"])
        arn = f"arn:{self.partition}:kms:{self.region}:{self.account_id}:{inputs['name']}"
        return inputs["name"], {"arn": arn}

    def _bucket(self, name: str, inputs: dict[str, Any]) -> State:
        s3, bucket = self.client("s3"), inputs["bucket"]
        extra = {} if self.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        s3.create_bucket(Bucket=bucket, **extra)
        if inputs.get("tags"):
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tag_list(inputs["tags"])})
        return bucket, {"bucket": bucket, "arn": f"arn:{self.partition}:s3:::{bucket}"}

    def _bucket_public_access_block(self, name: str, inputs: dict[str, Any]) -> State:
        keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        self.client("s3").put_public_access_block(
            Bucket=inputs["bucket"],
            PublicAccessBlockConfiguration={k[0].upper() + k[1:]: bool(inputs.get(k)) for k in keys},
        )
        return inputs["bucket"], {}

    def _bucket_encryption(self, name: str, inputs: dict[str, Any]) -> State:
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
                }
            }
            for rule in inputs["rules"]
        ]
        self.client("s3").put_bucket_encryption(
            Bucket=inputs["bucket"], ServerSideEncryptionConfiguration={"Rules": rules}
        )
        return inputs["bucket"], {}

    def _bucket_ownership(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("s3").put_bucket_ownership_controls(
            Bucket=inputs["bucket"],
            OwnershipControls={"Rules": [{"ObjectOwnership": inputs["rule"]["objectOwnership"]}]},
        )
        return inputs["bucket"], {}

    def _bucket_lifecycle(self, name: str, inputs: dict[str, Any]) -> State:
        rules = []
        for rule in inputs["rules"]:
            converted: dict[str, Any] = {"ID": rule["id"], "Status": rule["status"]}
            if "filter" in rule:
                converted["Filter"] = {"Prefix": rule["filter"].get("prefix", "")}
            if "expiration" in rule:
                converted["Expiration"] = {"Days": int(rule["expiration"]["days"])}
            if "abortIncompleteMultipartUpload" in rule:
                days = int(rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"])
                converted["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
            rules.append(converted)
        self.client("s3").put_bucket_lifecycle_configuration(
            Bucket=inputs["bucket"], LifecycleConfiguration={"Rules": rules}
        )
        return inputs["bucket"], {}

    def _topic(self, name: str, inputs: dict[str, Any]) -> State:
        attributes = {"KmsMasterKeyId": inputs["kmsMasterKeyId"]} if inputs.get("kmsMasterKeyId") else {}
        arn = self.client("sns").create_topic(
            Name=inputs["name"], Attributes=attributes, Tags=_tag_list(inputs.get("tags"))
        )["TopicArn"]
        return arn, {"arn": arn, "name": inputs["name"]}

    def _topic_policy(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("sns").set_topic_attributes(
            TopicArn=inputs["arn"], AttributeName="Policy", AttributeValue=inputs["policy"]
        )
        return inputs["arn"], {}

    def _subscription(self, name: str, inputs: dict[str, Any]) -> State:
        attributes = {}
        if "rawMessageDelivery" in inputs:
            attributes["RawMessageDelivery"] = "true" if inputs["rawMessageDelivery"] else "false"
        if inputs.get("redrivePolicy"):
            attributes["RedrivePolicy"] = inputs["redrivePolicy"]
        arn = self.client("sns").subscribe(
            TopicArn=inputs["topic"],
            Protocol=inputs["protocol"],
            Endpoint=inputs["endpoint"],
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        return arn, {"arn": arn}

    def _queue(self, name: str, inputs: dict[str, Any]) -> State:
        sqs = self.client("sqs")
        attributes = {"SqsManagedSseEnabled": "true" if inputs.get("sqsManagedSseEnabled") else "false"}
        if "visibilityTimeoutSeconds" in inputs:
            attributes["VisibilityTimeout"] = str(int(inputs["visibilityTimeoutSeconds"]))
        if "messageRetentionSeconds" in inputs:
            attributes["MessageRetentionPeriod"] = str(int(inputs["messageRetentionSeconds"]))
        if inputs.get("redrivePolicy"):
            attributes["RedrivePolicy"] = inputs["redrivePolicy"]
        url = sqs.create_queue(QueueName=inputs["name"], Attributes=attributes, tags=inputs.get("tags") or {})[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, {"arn": arn, "url": url, "name": inputs["name"]}

    def _queue_policy(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("sqs").set_queue_attributes(QueueUrl=inputs["queueUrl"], Attributes={"Policy": inputs["policy"]})
        return inputs["queueUrl"], {}

    def _parameter(self, name: str, inputs: dict[str, Any]) -> State:
        ssm = self.client("ssm")
        extra = {"KeyId": inputs["keyId"]} if inputs.get("keyId") else {}
        if inputs.get("description"):
            extra["Description"] = inputs["description"]
        ssm.put_parameter(
            Name=inputs["name"], Value=inputs["value"], Type=inputs["type"], Tags=_tag_list(inputs.get("tags")), **extra
        )
        parameter = ssm.get_parameter(Name=inputs["name"])["Parameter"]
        return inputs["name"], {"arn": parameter["ARN"], "name": inputs["name"], "version": parameter["Version"]}

    def _role(self, name: str, inputs: dict[str, Any]) -> State:
        role = self.client("iam").create_role(
            RoleName=inputs["name"],
            AssumeRolePolicyDocument=inputs["assumeRolePolicy"],
            Description=inputs.get("description", ""),
            Tags=_tag_list(inputs.get("tags")),
        )["Role"]
        return role["RoleName"], {"arn": role["Arn"], "name": role["RoleName"], "uniqueId": role["RoleId"]}

    def _role_policy(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("iam").put_role_policy(
            RoleName=inputs["role"], PolicyName=inputs["name"], PolicyDocument=inputs["policy"]
        )
        return f"{inputs['role']}:{inputs['name']}", {}

    def _log_group(self, name: str, inputs: dict[str, Any]) -> State:
        logs, group = self.client("logs"), inputs["name"]
        logs.create_log_group(logGroupName=group, tags=inputs.get("tags") or {})
        if inputs.get("retentionInDays"):
            logs.put_retention_policy(logGroupName=group, retentionInDays=int(inputs["retentionInDays"]))
        [found] = [
            g for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] if g["logGroupName"] == group
        ]
        # The provider reports the ARN without DescribeLogGroups' ":*" suffix.
        arn = found["arn"].removesuffix(":*")
        return group, {"arn": arn, "name": group}

    def _function(self, name: str, inputs: dict[str, Any]) -> State:
        spec: dict[str, Any] = {
            "FunctionName": inputs["name"],
            "Runtime": inputs["runtime"],
            "Role": inputs["role"],
            "Handler": inputs["handler"],
            "Code": {"ZipFile": archive_zip(inputs["code"])},
            "Description": inputs.get("description", ""),
            "Timeout": int(inputs["timeout"]),
            "MemorySize": int(inputs["memorySize"]),
            "Architectures": list(inputs.get("architectures") or []),
            "Environment": {"Variables": dict((inputs.get("environment") or {}).get("variables") or {})},
            "Tags": dict(inputs.get("tags") or {}),
        }
        logging_config = inputs.get("loggingConfig")
        if logging_config:
            spec["LoggingConfig"] = {"LogFormat": logging_config["logFormat"], "LogGroup": logging_config["logGroup"]}
        function = self.client("lambda").create_function(**spec)
        if inputs.get("reservedConcurrentExecutions") is not None:
            self.client("lambda").put_function_concurrency(
                FunctionName=function["FunctionName"],
                ReservedConcurrentExecutions=int(inputs["reservedConcurrentExecutions"]),
            )
        return function["FunctionName"], {
            "arn": function["FunctionArn"],
            "name": function["FunctionName"],
            "invokeArn": (
                f"arn:{self.partition}:apigateway:{self.region}:lambda:path/2015-03-31/functions/"
                f"{function['FunctionArn']}/invocations"
            ),
            "version": function.get("Version", "$LATEST"),
        }

    def _permission(self, name: str, inputs: dict[str, Any]) -> State:
        extra: dict[str, Any] = {"SourceArn": inputs["sourceArn"]} if inputs.get("sourceArn") else {}
        if inputs.get("functionUrlAuthType"):
            extra["FunctionUrlAuthType"] = inputs["functionUrlAuthType"]
        if inputs.get("invokedViaFunctionUrl") is not None:
            extra["InvokedViaFunctionUrl"] = bool(inputs["invokedViaFunctionUrl"])
        self.client("lambda").add_permission(
            FunctionName=inputs["function"],
            StatementId=name,
            Action=inputs["action"],
            Principal=inputs["principal"],
            **extra,
        )
        return name, {"statementId": name}

    def _function_url(self, name: str, inputs: dict[str, Any]) -> State:
        config = self.client("lambda").create_function_url_config(
            FunctionName=inputs["functionName"],
            AuthType=inputs["authorizationType"],
            InvokeMode=inputs.get("invokeMode") or "BUFFERED",
        )
        url = str(config["FunctionUrl"])
        return inputs["functionName"], {"functionUrl": url, "urlId": (urlsplit(url).hostname or "").split(".")[0]}

    def _event_rule(self, name: str, inputs: dict[str, Any]) -> State:
        arn = self.client("events").put_rule(
            Name=inputs["name"],
            ScheduleExpression=inputs["scheduleExpression"],
            Description=inputs.get("description", ""),
            State="ENABLED",
            Tags=_tag_list(inputs.get("tags")),
        )["RuleArn"]
        return inputs["name"], {"arn": arn, "name": inputs["name"]}

    def _event_target(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("events").put_targets(Rule=inputs["rule"], Targets=[{"Id": name, "Arn": inputs["arn"]}])
        return f"{inputs['rule']}-{name}", {"targetId": name}

    def _state_machine(self, name: str, inputs: dict[str, Any]) -> State:
        logging_input = inputs.get("loggingConfiguration") or {}
        logging_configuration: dict[str, Any] = {}
        if logging_input:
            logging_configuration = {
                "level": logging_input["level"],
                "includeExecutionData": bool(logging_input.get("includeExecutionData")),
                "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": logging_input["logDestination"]}}],
            }
        arn = self.client("stepfunctions").create_state_machine(
            name=inputs["name"],
            definition=inputs["definition"],
            roleArn=inputs["roleArn"],
            type=inputs.get("type", "STANDARD"),
            loggingConfiguration=logging_configuration,
            tracingConfiguration={"enabled": bool((inputs.get("tracingConfiguration") or {}).get("enabled"))},
            tags=_tag_list(inputs.get("tags"), "key", "value"),
        )["stateMachineArn"]
        return arn, {"arn": arn, "name": inputs["name"]}

    def _alarm(self, name: str, inputs: dict[str, Any]) -> State:
        cloudwatch = self.client("cloudwatch")
        alarm_name = inputs["name"]
        cloudwatch.put_metric_alarm(
            AlarmName=alarm_name,
            AlarmDescription=inputs.get("alarmDescription", ""),
            Namespace=inputs["namespace"],
            MetricName=inputs["metricName"],
            Dimensions=_tag_list(inputs.get("dimensions"), "Name", "Value"),
            Statistic=inputs["statistic"],
            Period=int(inputs["period"]),
            EvaluationPeriods=int(inputs["evaluationPeriods"]),
            DatapointsToAlarm=int(inputs["datapointsToAlarm"]),
            Threshold=float(inputs["threshold"]),
            ComparisonOperator=inputs["comparisonOperator"],
            TreatMissingData=inputs["treatMissingData"],
            AlarmActions=list(inputs.get("alarmActions") or []),
            OKActions=list(inputs.get("okActions") or []),
            Tags=_tag_list(inputs.get("tags")),
        )
        [alarm] = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
        return alarm_name, {"arn": alarm["AlarmArn"], "name": alarm_name}

    def _domain_identity(self, name: str, inputs: dict[str, Any]) -> State:
        domain = inputs["domain"]
        token = self.client("ses").verify_domain_identity(Domain=domain)["VerificationToken"]
        arn = f"arn:{self.partition}:ses:{self.region}:{self.account_id}:identity/{domain}"
        return domain, {"arn": arn, "verificationToken": token}

    def _domain_dkim(self, name: str, inputs: dict[str, Any]) -> State:
        tokens = self.client("ses").verify_domain_dkim(Domain=inputs["domain"])["DkimTokens"]
        return inputs["domain"], {"dkimTokens": tokens}

    def _rule_set(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("ses").create_receipt_rule_set(RuleSetName=inputs["ruleSetName"])
        arn = f"arn:{self.partition}:ses:{self.region}:{self.account_id}:receipt-rule-set/{inputs['ruleSetName']}"
        return inputs["ruleSetName"], {"arn": arn}

    def _receipt_rule(self, name: str, inputs: dict[str, Any]) -> State:
        actions = []
        for action in sorted(inputs.get("s3Actions") or [], key=lambda a: a.get("position", 0)):
            s3_action = {"BucketName": action["bucketName"], "ObjectKeyPrefix": action.get("objectKeyPrefix", "")}
            if action.get("topicArn"):
                s3_action["TopicArn"] = action["topicArn"]
            actions.append({"S3Action": s3_action})
        rule = {
            "Name": inputs["name"],
            "Enabled": bool(inputs.get("enabled", True)),
            "TlsPolicy": inputs.get("tlsPolicy", "Optional"),
            "Recipients": list(inputs.get("recipients") or []),
            "Actions": actions,
            "ScanEnabled": bool(inputs.get("scanEnabled")),
        }
        self.client("ses").create_receipt_rule(RuleSetName=inputs["ruleSetName"], Rule=rule)
        arn = (
            f"arn:{self.partition}:ses:{self.region}:{self.account_id}:receipt-rule-set/"
            f"{inputs['ruleSetName']}:receipt-rule/{inputs['name']}"
        )
        return inputs["name"], {"arn": arn}

    def _active_rule_set(self, name: str, inputs: dict[str, Any]) -> State:
        self.client("ses").set_active_receipt_rule_set(RuleSetName=inputs["ruleSetName"])
        return inputs["ruleSetName"], {}


@dataclass(frozen=True)
class Deployment:
    """What ``pulumi up`` reported, and what the mocks created in moto."""

    run: ProgramRun
    created: Mapping[str, list[str]]
    endpoint_url: str

    @property
    def outputs(self) -> dict[str, Any]:
        return self.run.outputs

    def output(self, key: str) -> Any:
        return self.run.outputs[key]

    def one(self, type_: str, **inputs: Any) -> Registration:
        return self.run.one(type_, **inputs)


def deploy(endpoint_url: str, config: Mapping[str, Any] | None = None, *, stack: str = STACK) -> Deployment:
    """Run ``__main__.py`` once, as ``pulumi up --stack {stack}`` would, into moto at ``endpoint_url``.

    The same steps as :func:`sesmail.local.program.run_program` with :class:`MotoMocks` in place of the
    recording mocks; exceptions of the program (or of a moto call it caused) propagate.
    """
    mocks = MotoMocks(endpoint_url)
    monitor = RecordingMonitor(mocks)
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    values = dict(stack_config() if config is None else config)
    values["aws:region"] = mocks.region
    pulumi.runtime.set_all_config(config_strings(values))
    exported: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[None]:
        runpy.run_path(str(MAIN), run_name="__main__")
        outputs = dict(getattr(pulumi.runtime.get_root_resource(), "outputs", {}))
        return pulumi.Output.from_input(outputs).apply(exported.update)

    program()
    resources = [r for r in mocks.registrations.values() if r.urn]
    run = ProgramRun(resources=resources, outputs=json.loads(json.dumps(exported)), calls=list(mocks.calls))
    return Deployment(run=run, created=dict(mocks.created), endpoint_url=endpoint_url)
