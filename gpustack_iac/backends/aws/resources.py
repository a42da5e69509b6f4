"""AWS resources for a fleet's node groups and a gateway, declared with pulumi-aws.

A node group is a launch template plus an Auto Scaling group with a mixed-instances policy over the
catalog's instance types; the controller owns the desired capacity (Pulumi ignores it). Tokens live
in SSM Parameter Store as SecureStrings; instances read them with their instance profile.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gpustack_iac.backends.cloud import (AGENT_PORT, CONTROL_PORT, GATEWAY_PORTS, GATEWAY_PRIVATE_IP, JOIN_DIR, VPC_CIDR,
                                          AgentJoin, CloudGateway, GatewayInstance, Network, NodeGroup, agent_boot, gateway_boot,
                                          new_token)

# The AWS Deep Learning Base AMI (NVIDIA driver, CUDA, Docker), resolved per region by EC2 itself from
# the public SSM parameter: no lookup at plan time, always the current image.
GPU_IMAGE = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CPU_IMAGE = "resolve:ssm:/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"


@dataclass
class AwsNetwork:
    vpc: aws.ec2.Vpc
    subnets: list[aws.ec2.Subnet]  # public: the gateway (with a public IP) and an internet-facing load balancer
    private_subnets: list[aws.ec2.Subnet]  # nodes: out through the NAT gateway
    public_table: aws.ec2.RouteTable
    private_table: aws.ec2.RouteTable


def network(name: str, region: str, parent: pulumi.Resource) -> AwsNetwork:
    """A VPC with a public and a private subnet in two zones of the region. Nodes get no public
    address: they reach out (object storage, images) through one NAT gateway in the public subnet."""
    opts = pulumi.ResourceOptions(parent=parent)
    vpc = aws.ec2.Vpc(name, cidr_block=VPC_CIDR, enable_dns_hostnames=True, tags={"Name": name}, opts=opts)
    igw = aws.ec2.InternetGateway(name, vpc_id=vpc.id, opts=opts)
    table = aws.ec2.RouteTable(name, vpc_id=vpc.id, routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], opts=opts)
    subnets, private = [], []
    for i, zone in enumerate(("a", "b")):
        subnet = aws.ec2.Subnet(f"{name}-{region}{zone}", vpc_id=vpc.id, availability_zone=f"{region}{zone}",
                                cidr_block=f"10.60.{16 + i * 16}.0/20", map_public_ip_on_launch=True, opts=opts)
        aws.ec2.RouteTableAssociation(f"{name}-{region}{zone}", subnet_id=subnet.id, route_table_id=table.id, opts=opts)
        subnets.append(subnet)
    nat_ip = aws.ec2.Eip(f"{name}-nat", domain="vpc", opts=opts)
    nat = aws.ec2.NatGateway(name, allocation_id=nat_ip.id, subnet_id=subnets[0].id, opts=opts)
    private_table = aws.ec2.RouteTable(f"{name}-private", vpc_id=vpc.id,
                                       routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], opts=opts)
    for i, zone in enumerate(("a", "b")):
        subnet = aws.ec2.Subnet(f"{name}-{region}{zone}-private", vpc_id=vpc.id, availability_zone=f"{region}{zone}",
                                cidr_block=f"10.60.{64 + i * 16}.0/20", map_public_ip_on_launch=False, opts=opts)
        aws.ec2.RouteTableAssociation(f"{name}-{region}{zone}-private", subnet_id=subnet.id,
                                      route_table_id=private_table.id, opts=opts)
        private.append(subnet)
    return AwsNetwork(vpc=vpc, subnets=subnets, private_subnets=private, public_table=table, private_table=private_table)


def _gateway_subnet(gw: GatewayInstance, vpc: AwsNetwork, parent: pulumi.Resource) -> aws.ec2.Subnet:
    """The gateway's own subnet (10.60.0.0/24, holding the fixed private IP the nodes' user data
    names): routed through the internet gateway when the gateway has a public IP, else the NAT."""
    opts = pulumi.ResourceOptions(parent=parent)
    subnet = aws.ec2.Subnet(f"{gw.name}-gateway", vpc_id=vpc.vpc.id, availability_zone=f"{gw.region}a",
                            cidr_block="10.60.0.0/24", map_public_ip_on_launch=gw.public_ip, opts=opts)
    aws.ec2.RouteTableAssociation(f"{gw.name}-gateway", subnet_id=subnet.id, opts=opts,
                                  route_table_id=(vpc.public_table if gw.public_ip else vpc.private_table).id)
    return subnet


def _ssh_rules(net: Network) -> list[dict[str, object]]:
    if not net.admin_cidrs:
        return []
    return [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": list(net.admin_cidrs), "description": "SSH"}]


def _egress() -> list[dict[str, object]]:
    return [{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}]


def _secure_parameter(name: str, path: str, parent: pulumi.Resource) -> aws.ssm.Parameter:
    return aws.ssm.Parameter(name, name=path, type="SecureString", value=new_token(),
                             opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["value"]))


def _role(name: str, parameters: list[aws.ssm.Parameter], parent: pulumi.Resource,
          extra: list[dict[str, object]] | None = None) -> aws.iam.InstanceProfile:
    """An instance role that may read exactly these parameters (and do `extra`), nothing else."""
    opts = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(name, assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}), opts=opts)
    statements = pulumi.Output.all(*[p.arn for p in parameters]).apply(lambda arns: json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": list(arns)}, *(extra or [])]}))
    aws.iam.RolePolicy(name, role=role.id, policy=statements, opts=opts)
    return aws.iam.InstanceProfile(name, role=role.name, opts=opts)


def _joins_path(project: str, stack: str) -> str:
    """Where the fleets' join tokens live: one path, so the gateway can list them all."""
    return f"/gpustack/{project}/{stack}/joins"


def _fetch_joins(path: str, region: str) -> str:
    # The values pass through the shell's own builtins (read, printf), never a program's argv.
    return (f"aws ssm get-parameters-by-path --region {region} --with-decryption --path {path} "
            "--query 'Parameters[].[Name,Value]' --output text | while read -r name value; do "
            # Written aside and renamed: the controller never reads a half-written token.
            f"printf %s \"$value\" > {JOIN_DIR}/.new && mv {JOIN_DIR}/.new {JOIN_DIR}/\"${{name##*/}}\".token; done")


def asg_name(project: str, stack: str, group: NodeGroup) -> str:
    """The Auto Scaling group's own name: fixed, because the controller sizes it by name and the
    group's agents join with it as their node group."""
    return f"gpustack-{project}-{stack}-{group.name}"


def node_groups_file(groups: list[NodeGroup], project: str, stack: str, region: str) -> str:
    """The gateway's --node-groups JSON (runtime/controller/sizing_config.py) for these groups."""
    return json.dumps({"kind": "aws", "region": region, "groups": [
        {"name": asg_name(project, stack, g), "fleet": g.fleet, "min": g.min_size, "max": g.max_size,
         "gpus": g.gpu_count, "labels": _agent_labels(g), "idle_duration": g.idle_duration} for g in groups]},
        sort_keys=True)


def _agent_labels(group: NodeGroup) -> dict[str, str]:
    return {"backend": "aws", "region": group.region, "spot": str(group.spot).lower()}


def _fetch(path: str, region: str) -> str:
    return f"aws ssm get-parameter --region {region} --with-decryption --name {path} --query Parameter.Value --output text"


def node_groups(fleet: str, groups: list[NodeGroup], net: Network, project: str, stack: str,
                parent: pulumi.Resource, shared: AwsNetwork | None = None) -> list[aws.autoscaling.Group]:
    region = groups[0].region
    opts = pulumi.ResourceOptions(parent=parent)
    vpc = shared or network(fleet, region, parent)
    sg = aws.ec2.SecurityGroup(
        fleet, vpc_id=vpc.vpc.id, description=f"gpustack fleet {fleet}: agent port from the VPC only",
        ingress=[{"protocol": "tcp", "from_port": AGENT_PORT, "to_port": AGENT_PORT, "cidr_blocks": [VPC_CIDR],
                  "description": "agent"}, *_ssh_rules(net)],
        egress=_egress(), opts=opts)
    token_path = f"/gpustack/{project}/{stack}/fleets/{fleet}/agent-token"
    token = _secure_parameter(f"{fleet}-agent-token", token_path, parent)
    join_path = f"{_joins_path(project, stack)}/{fleet}"
    join_token = _secure_parameter(f"{fleet}-join-token", join_path, parent)
    profile = _role(f"{fleet}-node", [token, join_token], parent)
    # `placement: cluster`: every node in one cluster placement group (one zone, low-latency network).
    cluster = (aws.ec2.PlacementGroup(fleet, name=f"gpustack-{project}-{stack}-{fleet}", strategy="cluster", opts=opts)
               if any(g.cluster for g in groups) else None)
    out = []
    for group in groups:
        join = AgentJoin(_fetch(join_path, region), fleet, asg_name(project, stack, group),
                         labels=tuple(sorted(_agent_labels(group).items())))
        user_data = base64.b64encode(agent_boot(_fetch(token_path, region), name_cmd="cat /var/lib/cloud/data/instance-id",
                                                join=join).encode()).decode()
        template = aws.ec2.LaunchTemplate(
            group.name, image_id=GPU_IMAGE if group.gpu_count else CPU_IMAGE,
            instance_type=group.instance_types[0], user_data=user_data,
            iam_instance_profile={"arn": profile.arn}, **_placement_args(group, cluster, sg),
            block_device_mappings=[{"device_name": "/dev/sda1", "ebs": {"volume_size": group.disk_gb, "volume_type": "gp3",
                                                                         "delete_on_termination": "true"}}],
            metadata_options={"http_tokens": "required", "http_endpoint": "enabled"},
            tag_specifications=[{"resource_type": "instance", "tags": {**group.labels, "Name": group.name}}],
            opts=opts)
        distribution: dict[str, object] = {
            "on_demand_base_capacity": 0,
            "on_demand_percentage_above_base_capacity": 0 if group.spot else 100,
            "spot_allocation_strategy": "price-capacity-optimized",
        }
        if group.spot and group.max_price is not None:
            distribution["spot_max_price"] = f"{group.max_price:.4f}"
        out.append(aws.autoscaling.Group(
            group.name, name=asg_name(project, stack, group), min_size=group.min_size, max_size=group.max_size, desired_capacity=group.min_size,
            # A placement group lives in one zone.
            vpc_zone_identifiers=[s.id for s in vpc.private_subnets[:1 if group.cluster else None]],
            capacity_rebalance=group.spot,
            mixed_instances_policy={
                "instances_distribution": distribution,
                "launch_template": {
                    "launch_template_specification": {"launch_template_id": template.id, "version": "$Latest"},
                    "overrides": [{"instance_type": t} for t in group.instance_types],
                },
            },
            # gpustack-stack scopes the gateway's permission to set desired capacity to this stack's groups.
            tags=[{"key": k, "value": v, "propagate_at_launch": True}
                  for k, v in sorted({**group.labels, "gpustack-stack": f"{project}/{stack}"}.items())],
            # The controller sets the desired capacity between min and max; Pulumi must not reset it.
            opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["desiredCapacity"])))
    return out


# Instance types with an Elastic Fabric Adapter (the GPU types where multi-node training needs it).
EFA_TYPES = frozenset({"p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge", "g5.48xlarge",
                       "g6.48xlarge", "g6e.48xlarge", "trn1.32xlarge"})


def _placement_args(group: NodeGroup, cluster: aws.ec2.PlacementGroup | None,
                    sg: aws.ec2.SecurityGroup) -> dict[str, object]:
    """The launch template's placement group, network interface (EFA where every type of the group
    has one) and capacity reservation."""
    args: dict[str, object] = {"vpc_security_group_ids": [sg.id]}
    if group.cluster and cluster is not None:
        args["placement"] = {"group_name": cluster.name}
        if set(group.instance_types) <= EFA_TYPES:
            args = {"network_interfaces": [{"device_index": 0, "interface_type": "efa", "security_groups": [sg.id],
                                            "delete_on_termination": "true"}], **{k: v for k, v in args.items()
                                                                                  if k != "vpc_security_group_ids"}}
    if group.reservation:
        target = ({"capacity_reservation_id": group.reservation} if group.reservation.startswith("cr-")
                  else {"capacity_reservation_resource_group_arn": group.reservation})
        args["capacity_reservation_specification"] = {"capacity_reservation_target": target}
    return args


def gateway(gw: GatewayInstance, net: Network, project: str, stack: str, parent: pulumi.Resource,
            shared: AwsNetwork | None = None, node_groups: list[NodeGroup] | None = None) -> CloudGateway:
    opts = pulumi.ResourceOptions(parent=parent)
    vpc = shared or network(gw.name, gw.region, parent)
    ingress = [{"protocol": "tcp", "from_port": p, "to_port": p, "cidr_blocks": ["0.0.0.0/0"], "description": "gateway"}
               for p in GATEWAY_PORTS]
    # Agents in the network join through the control API (the join token guards it).
    ingress.append({"protocol": "tcp", "from_port": CONTROL_PORT, "to_port": CONTROL_PORT, "cidr_blocks": [VPC_CIDR],
                    "description": "agents joining"})
    if net.admin_cidrs:
        ingress.append({"protocol": "tcp", "from_port": CONTROL_PORT, "to_port": CONTROL_PORT,
                        "cidr_blocks": list(net.admin_cidrs), "description": "control API"})
    sg = aws.ec2.SecurityGroup(gw.name, vpc_id=vpc.vpc.id, description=f"gpustack gateway {gw.name}",
                               ingress=[*ingress, *_ssh_rules(net)], egress=_egress(), opts=opts)
    base = f"/gpustack/{project}/{stack}/gateways/{gw.name}"
    token = _secure_parameter(f"{gw.name}-token", f"{base}/token", parent)
    admin = _secure_parameter(f"{gw.name}-admin-token", f"{base}/admin-token", parent)
    scaling = _scaling_statements(project, stack)
    joins = _joins_path(project, stack)
    # The controller reads every fleet's join token (and nothing else under the stack's path).
    scaling.append({"Effect": "Allow", "Action": ["ssm:GetParametersByPath", "ssm:GetParameter"],
                    "Resource": [f"arn:aws:ssm:{gw.region}:*:parameter{joins}", f"arn:aws:ssm:{gw.region}:*:parameter{joins}/*"]})
    profile = _role(f"{gw.name}-gateway", [token, admin], parent, scaling)
    # The controller sizes the node groups of this gateway's network (same region).
    sized = [g for g in node_groups or [] if g.region == gw.region]
    user_data = gateway_boot(_fetch(f"{base}/token", gw.region), _fetch(f"{base}/admin-token", gw.region), gw,
                             fetch_join_tokens=_fetch_joins(joins, gw.region),
                             node_groups=node_groups_file(sized, project, stack, gw.region) if sized else None,
                             extra="aws-runtime" if sized else "")
    instance = aws.ec2.Instance(
        gw.name, ami=CPU_IMAGE, instance_type=gw.instance_type,
        subnet_id=_gateway_subnet(gw, vpc, parent).id,
        private_ip=GATEWAY_PRIVATE_IP,  # agents' user data names it (CONTROLLER_URL)
        vpc_security_group_ids=[sg.id], iam_instance_profile=profile.name, user_data=user_data,
        metadata_options={"http_tokens": "required", "http_endpoint": "enabled"}, tags={"Name": gw.name},
        # `resolve:ssm:` names the latest image: without ignoring it every later `up` would replace the
        # gateway. A replacement (a changed type or user data) must free the fixed private IP first.
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["ami"], delete_before_replace=True))
    address: pulumi.Output[str] = instance.private_ip
    if gw.public_ip:
        address = aws.ec2.Eip(gw.name, instance=instance.id, domain="vpc", opts=opts).public_ip
    lb = _acm_load_balancer(gw, vpc, sg, instance, parent) if gw.certificate == "acm" and gw.acm_arn else None
    scheme = "https" if gw.certificate and gw.domain else "http"
    url = address.apply(lambda ip: f"http://{ip}")
    if gw.domain:
        _dns_records(gw, address, lb, parent)
        url = pulumi.Output.from_input(f"{scheme}://{gw.domain}")
    return CloudGateway(url=url, control_url=address.apply(lambda ip: f"http://{ip}:{CONTROL_PORT}"),
                        token=token.value, admin_token=admin.value)


def _scaling_statements(project: str, stack: str) -> list[dict[str, object]]:
    """The controller scales this stack's node groups: it may set their desired capacity and
    terminate one of their instances (idle scale-in), and read why launches failed, nothing more. Describe* actions support no
    resource-level condition (a tag condition on them is AccessDenied), so they are granted alone;
    they only read."""
    return [
        {"Effect": "Allow", "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Resource": "*",
         "Condition": {"StringEquals": {"autoscaling:ResourceTag/gpustack-stack": f"{project}/{stack}"}}},
        {"Effect": "Allow", "Action": ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                                       "autoscaling:DescribeScalingActivities"], "Resource": "*"},
    ]


def _dns_records(gw: GatewayInstance, address: pulumi.Output[str], lb: aws.lb.LoadBalancer | None,
                 parent: pulumi.Resource) -> None:
    """The gateway's zone, its apex and wildcard. Behind the ACM load balancer the apex is an alias
    A record (a CNAME at the apex is rejected by Route 53); the wildcard may be a CNAME."""
    assert gw.domain is not None
    opts = pulumi.ResourceOptions(parent=parent)
    zone = aws.route53.Zone(gw.name, name=gw.domain, comment=f"gpustack gateway {gw.name}; delegate {gw.domain} here",
                            opts=opts)
    if lb is not None:
        aws.route53.Record(f"{gw.name}-apex", name=gw.domain, type="A", zone_id=zone.zone_id, opts=opts,
                           aliases=[{"name": lb.dns_name, "zone_id": lb.zone_id, "evaluate_target_health": True}])
        aws.route53.Record(f"{gw.name}-wildcard", name=f"*.{gw.domain}", type="CNAME", zone_id=zone.zone_id, ttl=60,
                           records=[lb.dns_name], opts=opts)
        return
    for label in ("", "*."):
        aws.route53.Record(f"{gw.name}-{'wildcard' if label else 'apex'}", name=f"{label}{gw.domain}", type="A",
                           zone_id=zone.zone_id, ttl=60, records=[address], opts=opts)


def _acm_load_balancer(gw: GatewayInstance, vpc: AwsNetwork, sg: aws.ec2.SecurityGroup, instance: aws.ec2.Instance,
                       parent: pulumi.Resource) -> aws.lb.LoadBalancer:
    """An application load balancer ending TLS with the ACM certificate in front of the gateway's port 80;
    internal (in the private subnets) when the gateway has no public IP."""
    opts = pulumi.ResourceOptions(parent=parent)
    lb = aws.lb.LoadBalancer(gw.name, load_balancer_type="application", security_groups=[sg.id],
                             internal=not gw.public_ip,
                             subnets=[s.id for s in (vpc.subnets if gw.public_ip else vpc.private_subnets)], opts=opts)
    target = aws.lb.TargetGroup(gw.name, port=80, protocol="HTTP", vpc_id=vpc.vpc.id,
                                health_check={"path": "/healthz"}, opts=opts)
    aws.lb.TargetGroupAttachment(gw.name, target_group_arn=target.arn, target_id=instance.id, port=80, opts=opts)
    aws.lb.Listener(f"{gw.name}-https", load_balancer_arn=lb.arn, port=443, protocol="HTTPS", certificate_arn=gw.acm_arn,
                    ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                    default_actions=[{"type": "forward", "target_group_arn": target.arn}], opts=opts)
    return lb
