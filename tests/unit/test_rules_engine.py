"""Matching semantics of the rule engine, table-driven: operators, lists, macros, scope, image
references, exceptions, overrides, list appends, kill specs and load order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from roxd.model import (
    ActionKind,
    Ancestor,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    Process,
    Severity,
)
from roxd.rules import KillPath, RuleSet, load_rule_set
from roxd.rules.images import ImagePattern, parse_image_ref

pytestmark = pytest.mark.unit

RULE_HEAD = """
[[rule]]
id = "{id}"
name = "test rule"
description = "a rule under test"
phase = "foothold"
severity = "warning"
mitre = ["T1059"]
event = "{event}"
actions = {actions}
"""


def rule(
    id: str = "t.rule", event: str = "exec", actions: str = '["alert"]', body: str = ""
) -> str:
    return RULE_HEAD.format(id=id, event=event, actions=actions) + textwrap.dedent(body)


def load(tmp_path: Path, *texts: str) -> RuleSet:
    paths = []
    for index, text in enumerate(texts):
        path = tmp_path / f"{index:02d}.toml"
        path.write_text(textwrap.dedent(text))
        paths.append(path)
    return load_rule_set(paths)


def box(
    image: str | None = "nginx:1.25", name: str = "web-1", labels=None, runtime: str = "docker"
) -> Container:
    return Container(id="a" * 64, runtime=runtime, name=name, image=image, labels=labels or {})


def pod_box(namespace: str = "shop", pod: str = "web-7d9f", name: str = "nginx",
            pod_labels=None) -> Container:
    return Container(id="b" * 64, runtime="containerd", name=name, image="nginx:1.25",
                     pod=pod, namespace=namespace, pod_uid="0d5f2b4e-7c1a-4f8e-9b3d-2a6c8e1f4b7d",
                     pod_labels={"app": "web"} if pod_labels is None else pod_labels,
                     runtime_namespace="k8s.io")


def exe_event(
    args: tuple[str, ...],
    exe: str | None = None,
    parent: str | None = "/bin/bash",
    ancestors: tuple[str, ...] = (),
    container: Container | None = None,
    uid: int = 0,
    filename: str | None = None,
) -> EnrichedEvent:
    exe = exe or args[0]
    chain = ((Ancestor(10, parent),) if parent else ()) + tuple(Ancestor(11, a) for a in ancestors)
    process = Process(
        pid=20,
        ppid=10,
        uid=uid,
        exe=exe,
        comm=exe.rpartition("/")[2],
        args=args,
        cgroup_id=5,
        ancestors=chain,
    )
    event = ExecEvent(1, 20, 10, uid, 0, 5, process.comm, filename or exe, args, False)
    return EnrichedEvent(event, container, process)


def conn(
    daddr: str, dport: int, container: Container | None = None, errno: int = 0
) -> EnrichedEvent:
    process = Process(
        pid=30, ppid=1, uid=0, exe="/usr/bin/curl", comm="curl", args=("curl",), cgroup_id=5
    )
    family = "ipv6" if ":" in daddr else "ipv4"
    event = ConnectEvent(1, 30, 30, 0, 5, "curl", family, daddr, dport, errno)
    return EnrichedEvent(event, container, process)


def hits(rule_set: RuleSet, event: EnrichedEvent) -> list[str]:
    return [m.rule.id for m in rule_set.match(event)]


# ----------------------------------------------------------------------------- conditions

SH = ("/bin/sh", "-c", "id")
CONDITION_CASES = [
    # (when body, event, expected match)
    ('exe = "/bin/sh"', exe_event(SH), True),
    ('exe = "/bin/bash"', exe_event(SH), False),
    ('exe_basename = ["sh", "bash"]', exe_event(SH), True),
    ('exe_basename = { not_in = ["sh", "bash"] }', exe_event(SH), False),
    ('exe = { glob = "/bin/*" }', exe_event(SH), True),
    ('exe = { not_glob = "/bin/*" }', exe_event(SH), False),
    ('exe = { prefix = ["/usr/", "/bin/"] }', exe_event(SH), True),
    ('exe = { not_prefix = "/usr/" }', exe_event(SH), True),
    ('cmdline = { contains = "-c id" }', exe_event(SH), True),
    ('cmdline = { regex = "^/bin/sh\\\\s+-c" }', exe_event(SH), True),
    ('cmdline = { not_regex = "id$" }', exe_event(SH), False),
    # args: an operator holds when any element satisfies it; argv[0] is included
    ('args = "-c"', exe_event(SH), True),
    ('args = "/bin/sh"', exe_event(SH), True),
    ('params = "/bin/sh"', exe_event(SH), False),
    ('argv0 = "/bin/sh"', exe_event(SH), True),
    ('args = { glob = "-*" }', exe_event(SH), True),
    ('args = { not_in = ["-i"] }', exe_event(SH), True),
    ('args = { not_in = ["-c"] }', exe_event(SH), False),
    # several operators on one field: all must hold
    ('exe = { prefix = "/bin/", not_glob = "*bash" }', exe_event(SH), True),
    # ancestry
    ('parent_exe = "/bin/bash"', exe_event(SH), True),
    ('parent_basename = "bash"', exe_event(SH), True),
    ('parent_basename = "bash"', exe_event(SH, parent=None), False),
    ('parent_basename = { not_in = ["bash"] }', exe_event(SH, parent=None), True),
    ('ancestor_basename = "java"', exe_event(SH, ancestors=("/opt/jdk/bin/java",)), True),
    ('ancestor_exe = { glob = "/opt/*" }', exe_event(SH, ancestors=("/opt/jdk/bin/java",)), True),
    ('ancestor_basename = "java"', exe_event(SH), False),
    ("uid = 0", exe_event(SH), True),
    ("uid = [1000, 1001]", exe_event(SH), False),
    ('filename = "sh"', exe_event(SH, filename="sh"), True),
    # container fields in conditions
    ("container = true", exe_event(SH, container=box()), True),
    ("container = true", exe_event(SH), False),
    ('image = "nginx"', exe_event(SH, container=box()), True),
    ('container_name = "web-*"', exe_event(SH, container=box()), False),  # equals is exact
    ('container_name = { glob = "web-*" }', exe_event(SH, container=box()), True),
    ('"label.app" = "shop"', exe_event(SH, container=box(labels={"app": "shop"})), True),
    ('runtime = "podman"', exe_event(SH, container=box()), False),
    # combinators
    ('any = [{ exe = "/nope" }, { exe_basename = "sh" }]', exe_event(SH), True),
    ('all = [{ exe = "/nope" }, { exe_basename = "sh" }]', exe_event(SH), False),
    ('not = { exe_basename = "sh" }', exe_event(SH), False),
    ("", exe_event(SH), True),  # an empty condition holds for every event of its type
]


@pytest.mark.parametrize(("when", "event", "expected"), CONDITION_CASES)
def test_condition(tmp_path: Path, when: str, event: EnrichedEvent, expected: bool) -> None:
    rule_set = load(tmp_path, rule(body=f"[rule.when]\n{when}\n"))
    assert (hits(rule_set, event) == ["t.rule"]) is expected


CONNECT_CASES = [
    ('daddr = "169.254.169.254"', conn("169.254.169.254", 80), True),
    ('daddr = { cidr = "10.0.0.0/8" }', conn("10.1.2.3", 80), True),
    ('daddr = { not_cidr = "10.0.0.0/8" }', conn("10.1.2.3", 80), False),
    # an IPv4-mapped IPv6 address is the IPv4 address
    ('daddr = { cidr = "169.254.169.254/32" }', conn("::ffff:169.254.169.254", 80), True),
    ('daddr = "fd00:ec2::254"', conn("fd00:ec2:0:0:0:0:0:254", 80), True),
    ('daddr = { cidr = "10.0.0.0/8" }', conn("fd00::1", 80), False),
    ("dport = 22", conn("10.0.0.1", 22), True),
    ("dport = [2375, 2376]", conn("10.0.0.1", 2377), False),
    ('family = "ipv6"', conn("fd00::1", 22), True),
    ('result = "refused"', conn("10.0.0.1", 22, errno=111), True),
    ('result = "ok"', conn("10.0.0.1", 22, errno=111), False),
]


@pytest.mark.parametrize(("when", "event", "expected"), CONNECT_CASES)
def test_connect_condition(tmp_path: Path, when: str, event: EnrichedEvent, expected: bool) -> None:
    rule_set = load(tmp_path, rule(event="connect", body=f"[rule.when]\n{when}\n"))
    assert (hits(rule_set, event) == ["t.rule"]) is expected


def test_rules_only_see_their_event_type(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        rule(id="t.exec", body="[rule.when]\n"),
        rule(id="t.connect", event="connect", body="[rule.when]\n"),
        rule(id="t.syscall", event="syscall", body='[rule.when]\nsyscall = "ptrace"\n'),
    )
    assert hits(rule_set, exe_event(SH)) == ["t.exec"]
    assert hits(rule_set, conn("10.0.0.1", 1)) == ["t.connect"]
    notes = rule_set.effective_action_notes(host_kills=True)
    assert notes["t.syscall"] == "alert"  # syscall events exist now (issue 10)
    assert rule_set.syscall_watch_set() == frozenset({"ptrace"})


# ----------------------------------------------------------------------------- lists, macros


def test_lists_nest_and_later_files_append(tmp_path: Path) -> None:
    lists = """
    [[list]]
    name = "shells"
    items = ["sh", "@more_shells"]
    [[list]]
    name = "more_shells"
    items = ["bash"]
    """
    user = """
    [[list]]
    name = "more_shells"
    append = true
    items = ["fish"]
    """
    body = '[rule.when]\nexe_basename = "@shells"\n'
    rule_set = load(tmp_path, lists, rule(body=body), user)
    for exe, expected in (
        ("/bin/sh", True),
        ("/bin/bash", True),
        ("/usr/bin/fish", True),
        ("/bin/zsh", False),
    ):
        assert (hits(rule_set, exe_event((exe,))) == ["t.rule"]) is expected, exe


def test_list_replace_and_literal_at_sign(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        '[[list]]\nname = "l"\nitems = ["sh"]\n',
        rule(body='[rule.when]\nexe_basename = "@l"\nargs = { not_in = ["@@quiet"] }\n'),
        '[[list]]\nname = "l"\nreplace = true\nitems = ["dash"]\n',
    )
    assert hits(rule_set, exe_event(("/bin/dash",))) == ["t.rule"]
    assert hits(rule_set, exe_event(("/bin/sh",))) == []
    assert hits(rule_set, exe_event(("/bin/dash", "@quiet"))) == []


def test_macros_compose_and_negate(tmp_path: Path) -> None:
    macros = """
    [[macro]]
    name = "shell"
    condition = { exe_basename = ["sh", "bash"] }
    [[macro]]
    name = "interactive_shell"
    condition = { macro = "shell", args = "-i" }
    """
    body = '[rule.when]\nmacro = "shell"\nnot = { macro = "interactive_shell" }\n'
    rule_set = load(tmp_path, macros, rule(body=body))
    assert hits(rule_set, exe_event(("/bin/sh", "-c", "x"))) == ["t.rule"]
    assert hits(rule_set, exe_event(("/bin/sh", "-i"))) == []


def test_macro_replace_in_a_later_file(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        '[[macro]]\nname = "m"\ncondition = { exe_basename = "sh" }\n',
        rule(body='[rule.when]\nmacro = "m"\n'),
        '[[macro]]\nname = "m"\nreplace = true\ncondition = { exe_basename = "zsh" }\n',
    )
    assert hits(rule_set, exe_event(("/bin/zsh",))) == ["t.rule"]
    assert hits(rule_set, exe_event(("/bin/sh",))) == []


# ----------------------------------------------------------------------------- images & scope

IMAGE_CASES = [
    ("nginx", "nginx", True),
    ("nginx", "nginx:1.25", True),
    ("nginx", "nginx@sha256:0123abcd", True),
    ("nginx", "docker.io/library/nginx:1.25", True),
    ("nginx", "index.docker.io/library/nginx", True),
    ("nginx", "bitnami/nginx:1.25", False),
    ("nginx", "nginx-exporter:1", False),
    ("docker.io/library/nginx", "nginx:1.25", True),
    ("nginx:1.*", "nginx:1.25", True),
    ("nginx:1.*", "nginx:2.0", False),
    ("nginx:latest", "nginx", True),
    ("nginx@sha256:0123*", "nginx@sha256:0123abcd", True),
    ("nginx@sha256:ffff*", "nginx@sha256:0123abcd", False),
    ("*/nginx", "bitnami/nginx", True),
    ("ghcr.io/acme/*", "ghcr.io/acme/api:3", True),
    ("ghcr.io/acme/*", "acme/api:3", False),
    ("localhost:5000/app", "localhost:5000/app:dev", True),
    ("*nginx*", "docker.io/bitnami/nginx:1", True),
    ("*", None, True),
    ("nginx", None, False),
]


@pytest.mark.parametrize(("pattern", "image", "expected"), IMAGE_CASES)
def test_image_pattern(pattern: str, image: str | None, expected: bool) -> None:
    assert ImagePattern.compile(pattern).matches(image) is expected


def test_image_reference_parsing() -> None:
    ref = parse_image_ref("registry.example:5000/team/app:2.1@sha256:abc")
    assert (ref.repository, ref.tag, ref.digest) == (
        "registry.example:5000/team/app",
        "2.1",
        "sha256:abc",
    )


SCOPE_CASES = [
    # (scope body, container or None for the host, expected)
    ("host = false", None, False),
    ("host = false", box(), True),
    ("containers = false", box(), False),
    ("containers = false", None, True),
    ('image = ["nginx", "httpd"]', box("docker.io/library/httpd:2.4"), True),
    ('image = ["nginx", "httpd"]', box("redis:7"), False),
    ('image = "nginx"', None, True),  # host processes follow `host`, not container filters
    ('name = "web-*"', box(name="/web-1"), True),
    ('name = "db-*"', box(), False),
    ('runtime = "containerd"', box(runtime="containerd"), True),
    ('runtime = "containerd"', box(), False),
    ('labels = { app = "shop" }', box(labels={"app": "shop"}), True),
    ('labels = { app = "shop*" }', box(labels={"app": "shopping"}), True),
    ('labels = { app = "shop" }', box(labels={"app": "blog"}), False),
    ("labels = { debug = true }", box(labels={"debug": ""}), True),
    ("labels = { debug = true }", box(), False),
    ("labels = { debug = false }", box(labels={"debug": "1"}), False),
    ("labels = { debug = false }", box(), True),
    # Kubernetes: namespace, pod name and pod labels (issue 18)
    ('namespace = "shop"', pod_box(), True),
    ('namespace = ["shop", "blog"]', pod_box(namespace="blog"), True),
    ('namespace = "shop"', pod_box(namespace="kube-system"), False),
    ('namespace = "shop"', box(), False),  # outside any pod: no namespace to match
    ('namespace = "*"', box(), True),
    ('namespace = "shop"', None, True),  # the host follows `host`
    ('pod = "web-*"', pod_box(), True),
    ('pod = "db-*"', pod_box(), False),
    ('pod_labels = { app = "web" }', pod_box(), True),
    ('pod_labels = { app = "web" }', pod_box(pod_labels={"app": "db"}), False),
    ("pod_labels = { tier = false }", pod_box(), True),
    ('name = "nginx"\nnamespace = "shop"', pod_box(), True),
    ('name = "nginx"\nnamespace = "shop"', pod_box(name="sidecar"), False),
]


@pytest.mark.parametrize(("scope", "where", "expected"), SCOPE_CASES)
def test_scope(tmp_path: Path, scope: str, where: Container | None, expected: bool) -> None:
    rule_set = load(tmp_path, rule(body=f"[rule.when]\n[rule.scope]\n{scope}\n"))
    assert (hits(rule_set, exe_event(SH, container=where)) == ["t.rule"]) is expected


def test_same_binary_fine_in_one_image_attack_in_another(tmp_path: Path) -> None:
    body = """
    [rule.when]
    exe_basename = "nc"
    [rule.scope]
    host = false
    [[rule.exception]]
    name = "image"
    fields = ["image"]
    values = [["busybox"]]
    """
    rule_set = load(tmp_path, rule(body=body))
    nc = ("/bin/nc", "-z", "db", "5432")
    assert hits(rule_set, exe_event(nc, container=box("busybox:1.36"))) == []
    assert hits(rule_set, exe_event(nc, container=box("nginx:1.25"))) == ["t.rule"]


# ----------------------------------------------------------------------------- exceptions

EXCEPTION_RULE = """
[rule.when]
exe_basename = ["sh", "bash"]
[[rule.exception]]
name = "image_parent"
fields = ["image", "parent_exe"]
values = [["nginx", "/usr/bin/tini"]]
[[rule.exception]]
name = "by_uid"
fields = ["uid", "cmdline"]
comps = ["in", "regex"]
values = [[[1000, 1001], "^sh -c healthcheck"]]
"""


@pytest.mark.parametrize(
    ("event", "excepted"),
    [
        (exe_event(SH, parent="/usr/bin/tini", container=box("nginx:1.25")), True),
        (exe_event(SH, parent="/usr/bin/tini", container=box("redis:7")), False),
        (exe_event(SH, parent="/bin/bash", container=box("nginx:1.25")), False),
        (exe_event(("sh", "-c", "healthcheck"), exe="/bin/sh", uid=1001), True),
        (exe_event(("sh", "-c", "healthcheck"), exe="/bin/sh", uid=0), False),
    ],
)
def test_exceptions(tmp_path: Path, event: EnrichedEvent, excepted: bool) -> None:
    rule_set = load(tmp_path, rule(body=EXCEPTION_RULE))
    assert (hits(rule_set, event) == []) is excepted


def test_exceptions_name_namespaces_pod_labels_and_container_names(tmp_path: Path) -> None:
    body = """
    [rule.when]
    exe_basename = "sh"
    [[rule.exception]]
    name = "ns_container"
    fields = ["namespace", "container_name"]
    values = [["kube-system", "*"], ["shop", "debug-*"]]
    [[rule.exception]]
    name = "pod_label"
    fields = ["pod_label.role", "pod"]
    values = [["ops-shell", "toolbox-*"]]
    """
    rule_set = load(tmp_path, rule(body=body))
    assert hits(rule_set, exe_event(SH, container=pod_box(namespace="kube-system"))) == []
    assert hits(rule_set, exe_event(SH, container=pod_box(name="debug-1"))) == []
    assert hits(rule_set, exe_event(SH, container=pod_box())) == ["t.rule"]
    toolbox = pod_box(pod="toolbox-1", pod_labels={"role": "ops-shell"})
    assert hits(rule_set, exe_event(SH, container=toolbox)) == []
    assert hits(rule_set, exe_event(SH, container=pod_box(pod="toolbox-1"))) == ["t.rule"]
    assert hits(rule_set, exe_event(SH)) == ["t.rule"]  # the host: no pod, no exception


def test_user_file_adds_exception_values_without_editing_the_pack(tmp_path: Path) -> None:
    user = """
    [[exception]]
    rule = "t.rule"
    name = "image_parent"
    values = [["redis", "/usr/bin/tini"], ["*", ["/sbin/init", "/usr/bin/dumb-init"]]]
    """
    rule_set = load(tmp_path, rule(body=EXCEPTION_RULE), user)
    assert hits(rule_set, exe_event(SH, parent="/usr/bin/tini", container=box("redis:7"))) == []
    assert hits(rule_set, exe_event(SH, parent="/usr/bin/dumb-init", container=box())) == []
    assert hits(rule_set, exe_event(SH, parent="/bin/login", container=box())) == ["t.rule"]
    compiled = rule_set.get("t.rule")
    assert compiled is not None and compiled.exception_count == 4


# ----------------------------------------------------------------------------- overrides


def test_overrides_change_enabled_severity_actions_and_monitor(tmp_path: Path) -> None:
    pack = rule(id="t.a", body='[rule.when]\nexe_basename = "sh"\n') + rule(
        id="t.b", body='[rule.when]\nexe_basename = "sh"\n'
    )
    user = """
    [[override]]
    id = "t.a"
    enabled = false
    [[override]]
    id = "t.b"
    severity = "critical"
    actions = ["alert", "kill"]
    monitor = true
    """
    rule_set = load(tmp_path, pack, user)
    (verdict,) = rule_set.match(exe_event(SH))
    assert verdict.rule.id == "t.b"
    assert verdict.rule.severity is Severity.CRITICAL
    assert verdict.actions == (ActionKind.ALERT, ActionKind.KILL)
    assert verdict.monitor is True
    notes = rule_set.effective_action_notes(host_kills=True)
    assert notes["t.a"] == "disabled"
    assert notes["t.b"] == "monitor (would: alert; kill: in-kernel)"
    assert rule_set.exec_kill_specs() == []  # a monitor rule is never killed in the kernel


def test_disabled_rule_is_listed_but_never_matches(tmp_path: Path) -> None:
    rule_set = load(tmp_path, rule(body='enabled = false\n[rule.when]\nexe_basename = "sh"\n'))
    assert [r.id for r in rule_set.rules] == ["t.rule"]
    assert rule_set.match(exe_event(SH)) == []


# ----------------------------------------------------------------------------- kill specs

KILL_CASES = [
    # (when + extra body, expected kill path, exe paths, basenames)
    ('exe_basename = ["xmrig", "minerd"]', KillPath.IN_KERNEL, set(), {"xmrig", "minerd"}),
    ('exe = "/tmp/x"', KillPath.IN_KERNEL, {"/tmp/x"}, set()),
    (
        'any = [{ exe = "/tmp/x" }, { exe_basename = "xmrig" }]',
        KillPath.IN_KERNEL,
        {"/tmp/x"},
        {"xmrig"},
    ),
    (
        'exe_basename = "xmrig"\n[[rule.exception]]\nname = "i"\nfields = ["image"]\n'
        'values = [["bench"]]',
        KillPath.IN_KERNEL,
        set(),
        {"xmrig"},
    ),
    # anything else is decided in userspace
    ('exe_basename = "xmrig"\nargs = "-o"', KillPath.USERSPACE, None, None),
    ('exe = { glob = "/tmp/*" }', KillPath.USERSPACE, None, None),
    ('exe_basename = { not_in = ["sh"] }', KillPath.USERSPACE, None, None),
    (
        'exe_basename = "xmrig"\n[[rule.exception]]\nname = "p"\nfields = ["parent_exe"]\n'
        'values = [["/bin/sh"]]',
        KillPath.USERSPACE,
        None,
        None,
    ),
    ("", KillPath.USERSPACE, None, None),
]


@pytest.mark.parametrize(("when", "path", "exe_paths", "basenames"), KILL_CASES)
def test_kill_path(tmp_path: Path, when: str, path: KillPath, exe_paths, basenames) -> None:
    rule_set = load(tmp_path, rule(actions='["alert", "kill"]', body=f"[rule.when]\n{when}\n"))
    compiled = rule_set.get("t.rule")
    assert compiled is not None and compiled.kill_path is path
    specs = rule_set.exec_kill_specs()
    if exe_paths is None:
        assert specs == []
        return
    (spec,) = specs
    assert (set(spec.exe_paths), set(spec.exe_basenames)) == (exe_paths, basenames)


def test_kill_spec_scope_includes_container_exceptions(tmp_path: Path) -> None:
    body = """
    [rule.when]
    exe_basename = "xmrig"
    [rule.scope]
    host = false
    image = ["*"]
    [[rule.exception]]
    name = "image"
    fields = ["image"]
    values = [["bench/*"]]
    """
    rule_set = load(tmp_path, rule(actions='["kill"]', body=body))
    (spec,) = rule_set.exec_kill_specs()
    assert spec.scope.matches_container(box("nginx")) is True
    assert spec.scope.matches_container(box("bench/xmrig:6")) is False
    assert spec.scope.matches_container(None) is False
    assert spec.scope.matches_any_container() is False


def test_connect_rule_on_port_and_address_is_killed_in_kernel(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path, rule(event="connect", actions='["kill"]',
                       body='[rule.when]\ndport = [1, 2]\ndaddr = { cidr = ["10.0.0.0/8"] }\n')
    )
    assert rule_set.effective_action_notes(host_kills=True)["t.rule"] == "kill: in-kernel"
    assert rule_set.exec_kill_specs() == []
    (spec,) = rule_set.connect_kill_specs()
    assert spec.ports == frozenset({1, 2})
    assert [str(n) for n in spec.networks] == ["10.0.0.0/8"]


def test_connect_rule_with_process_conditions_is_userspace(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path, rule(event="connect", actions='["kill"]',
                       body='[rule.when]\ndport = 1\nexe_basename = "curl"\n')
    )
    assert rule_set.effective_action_notes(host_kills=True)["t.rule"] == "kill: userspace"
    assert rule_set.connect_kill_specs() == []


# ----------------------------------------------------------------------------- loading


def test_directory_is_read_in_sorted_order_and_only_toml(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text('[[list]]\nname = "l"\nappend = true\nitems = ["bash"]\n')
    (tmp_path / "a.toml").write_text(
        '[[list]]\nname = "l"\nitems = ["sh"]\n' + rule(body='[rule.when]\nexe_basename = "@l"\n')
    )
    (tmp_path / "README.md").write_text("not rules")
    rule_set = load_rule_set([tmp_path])
    assert [Path(f).name for f in rule_set.files] == ["a.toml", "b.toml"]
    assert hits(rule_set, exe_event(("/bin/bash",))) == ["t.rule"]


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    first = load(tmp_path, rule(body="[rule.when]\n"))
    again = load(tmp_path, rule(body="[rule.when]\n"))
    changed = load(tmp_path, rule(body='[rule.when]\nexe_basename = "sh"\n'))
    assert first.version == again.version != changed.version
    assert len(first.version) == 16


def test_matches_are_in_load_order_and_carry_the_rule_ref(tmp_path: Path) -> None:
    rule_set = load(
        tmp_path,
        rule(id="t.z", body="[rule.when]\n"),
        rule(id="t.a", body='[rule.when]\nexe_basename = "sh"\n'),
        rule(id="t.m", body='[rule.when]\nargs = "-c"\n'),
    )
    verdicts = rule_set.match(exe_event(SH))
    assert [v.rule.id for v in verdicts] == ["t.z", "t.a", "t.m"]
    assert verdicts[0].rule.description == "a rule under test"
    assert verdicts[0].rule.mitre == ("T1059",)


def test_rule_listing(tmp_path: Path) -> None:
    rule_set = load(tmp_path, rule(body="[rule.when]\n"))
    (listed,) = rule_set.rules
    data = listed.to_dict()
    assert data["id"] == "t.rule" and data["phase"] == "foothold"
    assert data["source"].endswith("00.toml") and data["line"] == 3


# ----------------------------------------------------------------------------- kill targets


def test_kill_target_tree_or_container_is_decided_in_userspace(tmp_path: Path) -> None:
    for target in ("process-tree", "container"):
        rule_set = load(tmp_path, rule(actions='["kill"]',
                                       body=f'kill_target = "{target}"\n'
                                            '[rule.when]\nexe_basename = "xmrig"\n'))
        assert rule_set.exec_kill_specs() == []
        assert rule_set.effective_action_notes(host_kills=True)["t.rule"] == "kill: userspace"
        (compiled,) = rule_set.rules
        assert compiled.verdict.kill_target == target


@pytest.mark.parametrize(("extra", "actions", "needle"), [
    ('kill_target = "galaxy"\n', '["kill"]', "kill_target 'galaxy' is not one of"),
    ('kill_target = "container"\n', '["alert"]', "kill_target needs the kill action"),
])
def test_bad_kill_target(tmp_path: Path, extra: str, actions: str, needle: str) -> None:
    from roxd.errors import RuleError

    with pytest.raises(RuleError) as err:
        load(tmp_path, rule(actions=actions, body=extra + '[rule.when]\nexe = "/x"\n'))
    assert needle in str(err.value)
    assert "t.rule" in str(err.value)
