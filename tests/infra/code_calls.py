"""The IAM actions each component's code makes, derived from the code itself.

mypy type-checks ``api``, ``worker`` and ``conveyor`` and keeps the type of every
expression, so a call such as ``self.store.claim(...)`` or ``ctx.blobs(b).put(...)`` is
resolved to the method it runs (a port resolves to its AWS adapter). From each
component's entry points the call graph is walked down to the boto3 client calls in
``conveyor/aws`` (the only package that imports boto3), each one mapped to the IAM
action(s) that authorise it and the resource it acts on:

- the resource comes from the port the path went through: the task queue, the
  dead-letter queue (``Engine.dead_letters``), the table (an index for a Query by
  ``IndexName``), the bucket or its objects;
- the action is botocore's operation name under the service's IAM prefix, except where
  IAM authorises an operation by another action (``SPECIAL``).

Every branch of a reached function counts, whether or not a test exercises it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
from botocore import xform_name
from mypy import build
from mypy.find_sources import create_source_list
from mypy.nodes import (
    Argument,
    Block,
    CallExpr,
    Decorator,
    DictExpr,
    Expression,
    FuncDef,
    ListExpr,
    MemberExpr,
    MypyFile,
    NameExpr,
    Node,
    OverloadedFuncDef,
    RefExpr,
    Statement,
    StrExpr,
    TypeInfo,
)
from mypy.options import Options
from mypy.types import Instance, Type, UnionType, get_proper_type

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("sqs", "dynamodb", "s3")

# A port, and the adapter that implements it on AWS, with the resource it stands for.
PORTS = {
    "conveyor.ports.TaskStore": ("conveyor.aws.dynamodb.DynamoTaskStore", "table"),
    "conveyor.ports.WorkerRegistry": ("conveyor.aws.dynamodb.DynamoWorkerRegistry", "table"),
    "conveyor.ports.Broker": ("conveyor.aws.sqs.SqsBroker", "queue"),
    "conveyor.ports.BlobStore": ("conveyor.aws.s3.S3BlobStore", "bucket"),
}
# The Broker the engine keeps as ``dead_letters`` is the DLQ (conveyor/bootstrap.py).
DLQ_ATTRIBUTE = "dead_letters"
# AwsBackend methods that wrap one resource (the queue URL lookup happens inside them).
BACKEND = {
    "conveyor.aws.backend.AwsBackend.broker": "queue",
    "conveyor.aws.backend.AwsBackend.dead_letters": "dlq",
    "conveyor.aws.backend.AwsBackend.store": "table",
    "conveyor.aws.backend.AwsBackend.workers": "table",
    "conveyor.aws.backend.AwsBackend.blobs": "bucket",
}

# Operations IAM authorises by another action (AWS Service Authorization Reference):
# SQS batches by their single action; a GetObject/HeadObject of a missing key answers 404
# only with s3:ListBucket on the bucket (else 403), and the code relies on the 404; the
# parts of a multipart upload are PutObject's (only aborting one has an action of its own).
SPECIAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("sqs", "SendMessageBatch"): ("sqs:SendMessage",),
    ("sqs", "DeleteMessageBatch"): ("sqs:DeleteMessage",),
    ("sqs", "ChangeMessageVisibilityBatch"): ("sqs:ChangeMessageVisibility",),
    ("s3", "GetObject"): ("s3:GetObject", "s3:ListBucket"),
    ("s3", "HeadObject"): ("s3:GetObject", "s3:ListBucket"),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
}
# TransactWriteItems has no IAM action of its own: each item needs its own action.
TRANSACT_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
INDEX = "<names an index>"
BUCKET_LEVEL = {"s3:ListBucket", "s3:CreateBucket"}


@dataclass(frozen=True)
class Op:
    """One boto3 client call site: service, botocore operation, IAM actions."""

    service: str
    operation: str
    actions: tuple[str, ...]
    where: str = ""


def iam_actions(service: str, operation: str, transact_kinds: Iterable[str] = ()) -> tuple[str, ...]:
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        return tuple(sorted({TRANSACT_ITEMS[k] for k in transact_kinds}))
    return SPECIAL.get((service, operation), (f"{service}:{operation}",))


INDEX_READS = {"dynamodb:Query", "dynamodb:Scan"}


def resource_kind(action: str, resource: str, on_index: bool) -> str:
    """The kind of ARN ``action`` needs for a call on ``resource``."""
    if resource == "table" and on_index and action in INDEX_READS:
        return "index"
    if resource == "bucket" and action not in BUCKET_LEVEL:
        return "object"
    return resource


@functools.cache
def client_operations() -> dict[str, tuple[str, str]]:
    """boto3 method name -> (service, operation), from botocore's service models."""
    session = botocore.session.get_session()
    found: dict[str, tuple[str, str]] = {}
    for service in SERVICES:
        for op in session.get_service_model(service).operation_names:
            name = xform_name(op)
            assert name not in found, f"{name} is an operation of two services"
            found[name] = (service, op)
    return found


@functools.cache
def waiter_operations() -> dict[str, tuple[str, str]]:
    session = botocore.session.get_session()
    found: dict[str, tuple[str, str]] = {}
    for service in SERVICES:
        try:
            model = session.get_waiter_model(service)
        except Exception:  # a service without waiters
            continue
        for waiter in model.waiter_names:
            found[xform_name(waiter)] = (service, model.get_waiter(waiter).operation)
    return found


@dataclass
class Graph:
    """Per function (fully qualified): the functions it refers to, each with the resource
    the reference selects (or None), and the boto3 calls it makes."""

    edges: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)
    ops: dict[str, set[Op]] = field(default_factory=dict)
    modules: dict[str, list[str]] = field(default_factory=dict)  # module -> its functions


def _instances(typ: Type | None) -> Iterator[Instance]:
    proper = get_proper_type(typ) if typ is not None else None
    if isinstance(proper, Instance):
        yield proper
    elif isinstance(proper, UnionType):
        for item in proper.items:
            yield from _instances(item)


def _method(info: TypeInfo, name: str) -> str | None:
    for base in info.mro:
        node = base.names.get(name)
        if node is not None and isinstance(node.node, FuncDef | Decorator | OverloadedFuncDef):
            return f"{base.fullname}.{name}"
    return None


# Syntactic children only: a reference's target, a function's class and the like point
# elsewhere in the program and are not walked.
_NOT_CHILDREN = {"node", "info", "def_var", "original_def", "var", "analyzed", "fullname", "type", "expanded"}


@functools.cache
def _fields(cls: type) -> tuple[str, ...]:
    # mypy's nodes are compiled classes: their attributes are descriptors on the class.
    names = {
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if type(value).__name__ in ("getset_descriptor", "member_descriptor")
    }
    return tuple(sorted(names - _NOT_CHILDREN - {"__class__", "__match_args__"}))


def _children(node: Node) -> Iterator[Node]:
    for name in _fields(type(node)):
        value = getattr(node, name, None)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, Statement | Expression | Block | Argument):
                yield item
            elif isinstance(item, list | tuple):  # e.g. a comprehension's conditions
                yield from (i for i in item if isinstance(i, Statement | Expression | Block))


class _Collector:
    """Walks one module's tree, recording references and boto3 calls per function."""

    def __init__(self, graph: Graph, types: dict[Expression, Type], module: str) -> None:
        self.graph = graph
        self.types = types
        self.module = module
        self.current = [f"{module}.<module>"]
        self.graph.modules.setdefault(module, []).append(self.current[0])

    def walk(self, node: Node) -> None:
        entered = False
        if isinstance(node, FuncDef) and len(self.current) == 1:
            # Nested functions and lambdas belong to the function that defines them.
            self.current.append(node.fullname)
            self.graph.modules[self.module].append(node.fullname)
            entered = True
        elif isinstance(node, NameExpr):
            self._name(node)
        elif isinstance(node, MemberExpr):
            self._member(node)
        elif isinstance(node, CallExpr):
            if self.module.startswith("conveyor.aws") and isinstance(node.callee, MemberExpr):
                self._call(node, node.callee)
        elif isinstance(node, StrExpr) and node.value == "IndexName":
            # A DynamoDB request naming an index acts on the index's ARN.
            self.graph.edges.setdefault(self.current[-1], set()).add((INDEX, None))
        for child in _children(node):
            self.walk(child)
        if entered:
            self.current.pop()

    def _edge(self, target: str, resource: str | None = None) -> None:
        self.graph.edges.setdefault(self.current[-1], set()).add((target, resource))

    def _name(self, o: NameExpr) -> None:
        node = o.node
        if isinstance(node, FuncDef | Decorator | OverloadedFuncDef):
            self._edge(node.fullname)
        elif isinstance(node, TypeInfo):
            self._edge(f"{node.fullname}.__init__")

    def _member(self, o: MemberExpr) -> None:
        for instance in _instances(self.types.get(o.expr)):
            info = instance.type
            if info.fullname in PORTS:
                adapter, resource = PORTS[info.fullname]
                if resource == "queue" and isinstance(o.expr, MemberExpr) and o.expr.name == DLQ_ATTRIBUTE:
                    resource = "dlq"
                self._edge(f"{adapter}.{o.name}", resource)
                continue
            target = _method(info, o.name)
            if target is not None:
                self._edge(target, BACKEND.get(target))
        if isinstance(o.expr, RefExpr) and isinstance(o.expr.node, MypyFile):
            self._edge(f"{o.expr.node.fullname}.{o.name}")
        if self.module.startswith("conveyor.aws") and o.name in client_operations():
            # A client method called here or handed on (``_until_processed(..., client.batch_get_item)``).
            service, operation = client_operations()[o.name]
            self._op(Op(service, operation, iam_actions(service, operation), self.current[-1]))

    def _op(self, op: Op) -> None:
        self.graph.ops.setdefault(self.current[-1], set()).add(op)

    def _call(self, call: CallExpr, callee: MemberExpr) -> None:
        if callee.name == "get_waiter" and call.args and isinstance(call.args[0], StrExpr):
            found = waiter_operations().get(call.args[0].value)
            if found is not None:
                self._op(Op(*found, iam_actions(*found), self.current[-1]))
        elif callee.name == "transact_write_items":
            kinds = [key.value for key in _dict_keys(call) if key.value in TRANSACT_ITEMS]
            op = ("dynamodb", "TransactWriteItems")
            self._op(Op(*op, iam_actions(*op, kinds), self.current[-1]))


def _dict_keys(call: CallExpr) -> Iterator[StrExpr]:
    for arg in call.args:
        items = arg.items if isinstance(arg, ListExpr) else [arg]
        for item in items:
            if isinstance(item, DictExpr):
                for key, _ in item.items:
                    if isinstance(key, StrExpr):
                        yield key


@functools.cache
def graph(root: Path = ROOT) -> Graph:
    options = Options()
    options.export_types = True
    options.incremental = False
    options.ignore_missing_imports = True
    options.follow_imports = "skip"  # third-party packages: their types are not needed
    options.python_version = (3, 11)
    options.preserve_asts = True
    sources = create_source_list([str(root / p) for p in ("api", "worker", "conveyor")], options)
    result = build.build(sources, options)
    g = Graph()
    for name, state in result.graph.items():
        if state.tree is None or not name.startswith(("api", "worker", "conveyor")):
            continue
        _Collector(g, result.types, name).walk(state.tree)
    return g


def _index_aware(g: Graph, function: str) -> bool:
    return (INDEX, None) in g.edges.get(function, set())


def required(
    g: Graph, roots: Iterable[str], default: dict[str, tuple[str, ...]] | None = None
) -> set[tuple[str, str]]:
    """(IAM action, resource kind) pairs the code reachable from ``roots`` needs.

    A boto3 call reached through no port takes its resources from ``default`` (per
    service); without one, it is an error: nothing says what it acts on.
    """
    needs: set[tuple[str, str]] = set()
    seen: set[tuple[str, str | None]] = set()
    stack: list[tuple[str, str | None]] = [(r, None) for r in roots]
    while stack:
        function, resource = stack.pop()
        if (function, resource) in seen:
            continue
        seen.add((function, resource))
        for op in g.ops.get(function, ()):
            resources = (resource,) if resource else (default or {}).get(op.service, ())
            assert resources, f"{op.where}: {op.operation} is reached through no port"
            for action in op.actions:
                for r in resources:
                    needs.add((action, resource_kind(action, r, _index_aware(g, function))))
        for target, selects in g.edges.get(function, ()):
            stack.append((target, selects or resource))
    return needs


def reachable(g: Graph, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        function = stack.pop()
        if function not in seen:
            seen.add(function)
            stack += [t for t, _ in g.edges.get(function, ())]
    return seen


def functions_of(g: Graph, package: str) -> list[str]:
    return [f for m, fs in g.modules.items() if m == package or m.startswith(package + ".") for f in fs]


def calling_functions(g: Graph) -> set[str]:
    """Every function with a boto3 call of its own."""
    return {f for f, ops in g.ops.items() if ops}
