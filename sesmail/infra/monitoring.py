"""What the operator watches: the alarms, the dashboard and the saved Logs Insights queries.

The content is pure data built elsewhere (``alarms.alarm_specs``, ``dashboard.dashboard_body``,
``log_queries.query_specs``); this component only turns it into resources. Every alarm notifies
the alerts topic both when it fires and when it returns to OK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from sesmail import names
from sesmail.infra.alarms import AlarmSpec, alarm_specs, with_renewal_link
from sesmail.infra.context import AwsContext
from sesmail.infra.dashboard import dashboard_body
from sesmail.infra.log_queries import query_specs
from sesmail.infra.watched import Watched


def alarm_arn(aws_context: AwsContext, alarm_name: str) -> str:
    return aws_context.arn("cloudwatch", f"alarm:{alarm_name}")


class Monitoring(pulumi.ComponentResource):
    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    dashboard: aws.cloudwatch.Dashboard
    queries: dict[str, aws.cloudwatch.QueryDefinition]

    def __init__(
        self,
        name: str,
        *,
        env: str,
        aws_context: AwsContext,
        alerts_topic_arn: pulumi.Input[str],
        watched: Watched[pulumi.Input[str]],
        tags: Mapping[str, str],
        mailboxes: Sequence[str] = (names.DEFAULT_MAILBOX,),
        canary_log_group: pulumi.Input[str] | None = None,
        renewal_url: pulumi.Input[str] | None = None,
        renewable: Sequence[str] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sesmail:infra:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def description(spec: AlarmSpec[pulumi.Input[str]]) -> pulumi.Input[str]:
            mailbox = spec.renewal_mailbox
            if mailbox is None or renewal_url is None:
                return spec.description
            return pulumi.Output.from_input(renewal_url).apply(
                lambda url: with_renewal_link(spec.description, url, mailbox, renewable=mailbox in renewable)
            )

        specs = alarm_specs(env, watched, mailboxes, canary=canary_log_group is not None)
        self.alarms = {
            spec.key: aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                name=spec.name,
                alarm_description=description(spec),
                namespace=spec.namespace,
                metric_name=spec.metric_name,
                dimensions=dict(spec.dimensions) or None,
                statistic=spec.statistic,
                period=spec.period,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.datapoints_to_alarm,
                threshold=float(spec.threshold),
                comparison_operator=spec.comparison_operator,
                treat_missing_data=spec.treat_missing_data,
                alarm_actions=[alerts_topic_arn],
                ok_actions=[alerts_topic_arn],
                tags=dict(tags),
                opts=child,
            )
            for spec in specs
        }

        # ARNs derived from the names (plain strings), so the body needs no alarm output; the
        # dashboard still waits for the alarms so its alarm widget never shows missing ones.
        arns = [alarm_arn(aws_context, spec.name) for spec in specs]
        body = pulumi.Output.all(**watched.as_dict()).apply(
            lambda resolved: json.dumps(dashboard_body(env, aws_context.region, Watched(**resolved), arns, mailboxes))
        )
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=names.dashboard(env),
            dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.alarms.values())),
        )

        self.queries = {
            spec.key: aws.cloudwatch.QueryDefinition(
                f"{name}-query-{spec.key}",
                name=spec.name,
                query_string=spec.query_string,
                log_group_names=list(spec.log_groups),
                opts=child,
            )
            for spec in query_specs(env, watched, canary_log_group)
        }
        self.register_outputs({"dashboardName": self.dashboard.dashboard_name})
