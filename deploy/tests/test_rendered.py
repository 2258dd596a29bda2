#!/usr/bin/env python3
"""Assertions on the rendered deployment manifests.

Reads what validate.sh rendered (helm-<fs>.yaml and kustomize-<fs>.yaml for
fs in lustre, beegfs, both) and checks, object by object, what a working
installation depends on: the socket path shared by the driver, the registrar
and the kubelet registration; Bidirectional propagation where mounts are made;
least-privilege RBAC bound to the right ServiceAccounts; sidecar arguments;
configuration files that exist where the driver is told to read them; the
binary paths the image really holds. It also renders the chart with other
values (driver name, kubelet directory, invalid input) through helm.

Usage: test_rendered.py --render-dir DIR --helm PATH --repo DIR
Exit status 1 on any failed check; the last line is "N passed, N failed".
"""

import argparse
import os
import re
import subprocess
import sys
import tomllib
import traceback

import yaml

FILESYSTEMS = ("lustre", "beegfs", "both")
BINARIES = ("pfs-csi-controller", "pfs-csi-node", "pfsctl")

# Least-privilege RBAC: (apiGroup, resource) -> verbs, per role. Derived from
# what each kubernetes-csi sidecar calls with our flags (see controller-rbac.yaml).
EXPECTED_RULES = {
    "provisioner": {
        ("", "persistentvolumes"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "persistentvolumeclaims"): {"get", "list", "watch", "update"},
        ("storage.k8s.io", "storageclasses"): {"get", "list", "watch"},
        ("storage.k8s.io", "csinodes"): {"get", "list", "watch"},
        ("storage.k8s.io", "volumeattributesclasses"): {"get", "list", "watch"},
        ("", "nodes"): {"get", "list", "watch"},
        ("", "events"): {"list", "watch", "create", "update", "patch"},
        ("snapshot.storage.k8s.io", "volumesnapshots"): {"get", "list", "watch", "update"},
        ("snapshot.storage.k8s.io", "volumesnapshotcontents"): {"get", "list"},
    },
    "resizer": {
        ("", "persistentvolumes"): {"get", "list", "watch", "patch"},
        ("", "persistentvolumeclaims"): {"get", "list", "watch"},
        ("", "persistentvolumeclaims/status"): {"patch"},
        ("storage.k8s.io", "volumeattributesclasses"): {"get", "list", "watch"},
        ("", "events"): {"list", "watch", "create", "update", "patch"},
    },
    "snapshotter": {
        ("snapshot.storage.k8s.io", "volumesnapshotclasses"): {"get", "list", "watch"},
        ("snapshot.storage.k8s.io", "volumesnapshotcontents"): {
            "get", "list", "watch", "create", "update", "patch", "delete",
        },
        ("snapshot.storage.k8s.io", "volumesnapshotcontents/status"): {"update", "patch"},
        ("", "events"): {"list", "watch", "create", "update", "patch"},
    },
    "node": {
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    },
    "leader-election": {
        ("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update", "delete"},
    },
}

# Sidecar image repositories and the release lines we deploy.
SIDECAR_IMAGES = {
    "csi-provisioner": r"registry\.k8s\.io/sig-storage/csi-provisioner:v6\.\d+\.\d+$",
    "csi-resizer": r"registry\.k8s\.io/sig-storage/csi-resizer:v2\.\d+\.\d+$",
    "csi-snapshotter": r"registry\.k8s\.io/sig-storage/csi-snapshotter:v8\.\d+\.\d+$",
    "node-driver-registrar": r"registry\.k8s\.io/sig-storage/csi-node-driver-registrar:v2\.16\.\d+$",
    "liveness-probe": r"registry\.k8s\.io/sig-storage/livenessprobe:v2\.\d+\.\d+$",
}

# Secrets a render may reference without rendering them (helm ci/both-values.yaml).
EXTERNAL_SECRETS = {"helm-both": {"pfs-csi-config", "beegfs-connauth"}}


class Failure(Exception):
    """A failed expectation, with the object and field it concerns."""


def expect(condition, message):
    if not condition:
        raise Failure(message)


# ---------------------------------------------------------------- objects


class Render:
    """The objects of one rendered file, with lookups the checks need."""

    def __init__(self, name, objects):
        self.name = name
        self.objects = [o for o in objects if o]

    def of_kind(self, kind):
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind):
        found = self.of_kind(kind)
        expect(len(found) == 1, f"{self.name}: expected one {kind}, found {len(found)}")
        return found[0]

    @property
    def controller(self):
        return self.one("Deployment")

    @property
    def node(self):
        return self.one("DaemonSet")

    def secret(self, name):
        for obj in self.of_kind("Secret"):
            if obj["metadata"]["name"] == name:
                return obj
        return None


def load_render(path):
    with open(path, encoding="utf-8") as handle:
        return Render(os.path.basename(path).removesuffix(".yaml"), yaml.safe_load_all(handle))


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def container(workload, name):
    for item in pod_spec(workload)["containers"]:
        if item["name"] == name:
            return item
    raise Failure(f"{workload['metadata']['name']}: no container {name!r}")


def has_container(workload, name):
    return any(c["name"] == name for c in pod_spec(workload)["containers"])


def flag(cont, name):
    """Value of --name=value in a container's args (None when absent, True for a bare flag)."""
    found = None
    for arg in cont.get("args", []):
        if arg == f"--{name}":
            found = True
        elif arg.startswith(f"--{name}="):
            expect(found is None, f"{cont['name']}: --{name} given twice")
            found = arg.split("=", 1)[1]
    return found


def flags(cont, name):
    return [a.split("=", 1)[1] for a in cont.get("args", []) if a.startswith(f"--{name}=")]


def volume(workload, name):
    for vol in pod_spec(workload).get("volumes", []):
        if vol["name"] == name:
            return vol
    raise Failure(f"{workload['metadata']['name']}: volumeMount of undefined volume {name!r}")


def mount_of(cont, path):
    """The volumeMount a path inside a container is on: the longest mountPath
    prefix wins, as in the container runtime."""
    best = None
    for mount in cont.get("volumeMounts", []):
        mount_path = mount["mountPath"].rstrip("/")
        if path == mount_path or path.startswith(mount_path + "/"):
            if best is None or len(mount_path) > len(best["mountPath"].rstrip("/")):
                best = mount
    expect(best is not None, f"{cont['name']}: {path} is on no volume (lost on restart)")
    return best


def resolve(workload, cont, path):
    """Where a path inside a container lives: ("host", host path) through a
    hostPath volume, or (volume name, path inside it) for any other volume."""
    best = mount_of(cont, path)
    rest = path[len(best["mountPath"].rstrip("/")):]
    vol = volume(workload, best["name"])
    if "hostPath" in vol:
        return ("host", vol["hostPath"]["path"].rstrip("/") + rest)
    return (best["name"], rest)


def unix_path(endpoint):
    expect(endpoint and endpoint.startswith("unix://"), f"endpoint {endpoint!r} is not unix://")
    return endpoint[len("unix://"):]


def driver_settings(render):
    node_driver = container(render.node, "driver")
    driver_name = flag(node_driver, "driver-name")
    kubelet_dir = flag(node_driver, "kubelet-dir")
    expect(driver_name and kubelet_dir, f"{render.name}: node driver lacks --driver-name/--kubelet-dir")
    return driver_name, kubelet_dir.rstrip("/")


# ---------------------------------------------------------------- checks


def check_csidriver(render):
    driver_name, _ = driver_settings(render)
    csidriver = render.one("CSIDriver")
    spec = csidriver["spec"]
    expect(csidriver["metadata"]["name"] == driver_name,
           f"CSIDriver {csidriver['metadata']['name']} != --driver-name {driver_name}")
    expect(spec.get("attachRequired") is False, "CSIDriver attachRequired must be false")
    expect(spec.get("fsGroupPolicy") == "File", "CSIDriver fsGroupPolicy must be File")
    expect(spec.get("podInfoOnMount") is False, "CSIDriver podInfoOnMount must be false")
    expect(spec.get("requiresRepublish") is False, "CSIDriver requiresRepublish must be false")
    expect(spec.get("volumeLifecycleModes") == ["Persistent"], "CSIDriver modes must be [Persistent]")
    for workload in (render.controller, render.node):
        expect(flag(container(workload, "driver"), "driver-name") == driver_name,
               f"{workload['kind']} driver has another --driver-name")
    for sc in render.of_kind("StorageClass"):
        expect(sc["provisioner"] == driver_name, f"StorageClass {sc['metadata']['name']} provisioner")
    for vsc in render.of_kind("VolumeSnapshotClass"):
        expect(vsc["driver"] == driver_name, f"VolumeSnapshotClass {vsc['metadata']['name']} driver")


def check_binaries(render):
    expect(container(render.controller, "driver")["command"] == ["/usr/bin/pfs-csi-controller"],
           "controller driver must run /usr/bin/pfs-csi-controller")
    expect(container(render.node, "driver")["command"] == ["/usr/bin/pfs-csi-node"],
           "node driver must run /usr/bin/pfs-csi-node")


def check_node_socket_shared(render):
    driver_name, kubelet_dir = driver_settings(render)
    node = render.node
    expected = f"{kubelet_dir}/plugins/{driver_name}/csi.sock"
    driver = container(node, "driver")
    where = resolve(node, driver, unix_path(flag(driver, "endpoint")))
    expect(where == ("host", expected), f"node driver socket is {where}, want host {expected}")
    registrar = container(node, "node-driver-registrar")
    expect(resolve(node, registrar, flag(registrar, "csi-address")) == ("host", expected),
           "registrar --csi-address is not the driver's socket")
    expect(flag(registrar, "kubelet-registration-path") == expected,
           f"registrar --kubelet-registration-path {flag(registrar, 'kubelet-registration-path')} != {expected}")
    expect(resolve(node, registrar, "/registration") == ("host", f"{kubelet_dir}/plugins_registry"),
           "registrar /registration is not <kubeletDir>/plugins_registry")
    probe = container(node, "liveness-probe")
    expect(resolve(node, probe, flag(probe, "csi-address")) == ("host", expected),
           "node livenessprobe --csi-address is not the driver's socket")


def check_controller_socket_shared(render):
    ctrl = render.controller
    driver = container(ctrl, "driver")
    where = resolve(ctrl, driver, unix_path(flag(driver, "endpoint")))
    expect(where[0] != "host", "controller socket must be pod-local (emptyDir), not on the host")
    expect("emptyDir" in volume(ctrl, where[0]), "controller socket volume must be an emptyDir")
    for cont in pod_spec(ctrl)["containers"]:
        if cont["name"] != "driver":
            expect(resolve(ctrl, cont, flag(cont, "csi-address")) == where,
                   f"controller {cont['name']} --csi-address is not the driver's socket")


def check_propagation(render):
    _, kubelet_dir = driver_settings(render)
    node = render.node
    driver = container(node, "driver")
    bidirectional = {m["mountPath"] for m in driver["volumeMounts"]
                     if m.get("mountPropagation") == "Bidirectional"}
    for path in (f"{kubelet_dir}/pods", f"{kubelet_dir}/plugins/kubernetes.io/csi"):
        expect(path in bidirectional, f"node driver: {path} must be Bidirectional")
        expect(resolve(node, driver, path) == ("host", path), f"node driver: {path} must be the host's")
    for workload in (render.controller, render.node):
        for cont in pod_spec(workload)["containers"]:
            for mount in cont.get("volumeMounts", []):
                if mount.get("mountPropagation") == "Bidirectional":
                    expect(cont["name"] == "driver",
                           f"{cont['name']}: only driver containers may propagate mounts")
                    expect(cont.get("securityContext", {}).get("privileged") is True,
                           f"{workload['kind']} {cont['name']}: Bidirectional needs privileged")
                    vol = volume(workload, mount["name"])
                    expect("hostPath" in vol and vol["hostPath"]["path"] == mount["mountPath"],
                           f"{mount['mountPath']}: Bidirectional mount must be the same host path")


def check_state_dir(render):
    """Each driver's --state-dir is a writable volume (the root filesystem is
    read-only). The node plugin's is on the host under its plugin directory:
    staging records, shared-mount reference counts and BeeGFS client mounts
    must outlive restarts, and those mounts must reach the host
    (Bidirectional). The controller's is an emptyDir whose mounts stay in the
    pod (no propagation)."""
    driver_name, kubelet_dir = driver_settings(render)
    for workload in (render.controller, render.node):
        kind = workload["kind"]
        driver = container(workload, "driver")
        path = flag(driver, "state-dir")
        expect(isinstance(path, str) and path.startswith("/"),
               f"{kind} driver: --state-dir={path!r} must be given (its default is on the read-only root)")
        path = path.rstrip("/")
        mount = mount_of(driver, path)
        expect(not mount.get("readOnly"), f"{kind} driver: --state-dir {path} is on a read-only mount")
        where = resolve(workload, driver, path)
        vol = volume(workload, mount["name"])
        if workload is render.node:
            expected = f"{kubelet_dir}/plugins/{driver_name}/state"
            expect(where == ("host", expected), f"node --state-dir {path} is {where}, want host {expected}")
            expect(vol["hostPath"].get("type") == "DirectoryOrCreate",
                   f"node state-dir hostPath type {vol['hostPath'].get('type')}, want DirectoryOrCreate")
            expect(mount.get("mountPropagation") == "Bidirectional",
                   f"node --state-dir {path}: client mounts made there need Bidirectional propagation")
        else:
            expect(where[0] != "host" and "emptyDir" in vol,
                   f"controller --state-dir {path} must be an emptyDir, is {where}")
            expect(mount.get("mountPropagation") in (None, "None"),
                   f"controller --state-dir {path}: its mounts must not propagate")
            expect(mount["name"] != resolve(workload, driver, unix_path(flag(driver, "endpoint")))[0],
                   "controller --state-dir shares the socket volume with the sidecars")


def lustre_mounts(workload):
    driver = container(workload, "driver")
    return {m["mountPath"] for m in driver["volumeMounts"]
            if m.get("mountPropagation") == "Bidirectional"
            and "/plugins/" not in m["mountPath"] and not m["mountPath"].endswith("/pods")}


def check_filesystem_wiring(render):
    fs = render.name.split("-", 1)[1]
    for workload in (render.controller, render.node):
        mounts = lustre_mounts(workload)
        if fs in ("lustre", "both"):
            expect(mounts, f"{workload['kind']}: Lustre mount points must be Bidirectional")
        else:
            expect(not mounts, f"{workload['kind']}: BeeGFS-only render mounts Lustre points {mounts}")
        driver = container(workload, "driver")
        configs = [os.path.basename(p) for p in flags(driver, "config")]
        if fs in ("lustre", "both"):
            expect("exascaler-csi-file-driver-config.yaml" in configs,
                   f"{workload['kind']}: no EXAScaler --config")
        if fs in ("beegfs", "both"):
            expect("csi-beegfs-config.yaml" in configs, f"{workload['kind']}: no BeeGFS --config")
        if fs == "lustre":
            expect("csi-beegfs-config.yaml" not in configs, "Lustre-only render reads a BeeGFS config")
            expect(flag(driver, "beegfs-connauth-file") is None, "Lustre-only render has BeeGFS secrets")


def check_files_exist(render):
    """Every file the driver is told to read is a key of a mounted Secret."""
    external = EXTERNAL_SECRETS.get(render.name, set())
    for workload in (render.controller, render.node):
        driver = container(workload, "driver")
        paths = flags(driver, "config") + [
            p for p in (flag(driver, "beegfs-connauth-file"), flag(driver, "beegfs-tls-cert-file")) if p
        ]
        for path in paths:
            vol_name, rest = resolve(workload, driver, path)
            expect(vol_name != "host", f"{path}: configuration must come from a Secret, not the host")
            vol = volume(workload, vol_name)
            expect("secret" in vol, f"{path}: volume {vol_name} is not a Secret")
            secret_name = vol["secret"]["secretName"]
            secret = render.secret(secret_name)
            if secret is None:
                expect(secret_name in external, f"{path}: Secret {secret_name} is not rendered")
                continue
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            expect(rest.lstrip("/") in keys, f"{path}: Secret {secret_name} has no key {rest.lstrip('/')}")
            expect(oct(vol["secret"].get("defaultMode", 0o644)) == oct(0o400),
                   f"{path}: Secret volume must be mode 0400")
        for vol in pod_spec(workload).get("volumes", []):
            if "secret" in vol:
                name = vol["secret"]["secretName"]
                expect(render.secret(name) is not None or name in external,
                       f"{workload['kind']} volume {vol['name']}: Secret {name} is not rendered")


def rules_by_role(render):
    """ClusterRoles and Roles by their suffix, as {(group, resource): verbs}."""
    roles = {}
    for role in render.of_kind("ClusterRole") + render.of_kind("Role"):
        suffix = next((s for s in EXPECTED_RULES if role["metadata"]["name"].endswith(s)), None)
        expect(suffix is not None, f"unexpected role {role['metadata']['name']}")
        table = {}
        for rule in role["rules"]:
            expect("resourceNames" not in rule or rule["resourceNames"], "empty resourceNames")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    expect("*" not in rule["verbs"] and resource != "*" and group != "*",
                           f"{role['metadata']['name']}: wildcard rule")
                    table.setdefault((group, resource), set()).update(rule["verbs"])
        roles[suffix] = (role, table)
    return roles


def check_rbac(render):
    roles = rules_by_role(render)
    expected = set(EXPECTED_RULES)
    if not has_container(render.controller, "csi-resizer"):
        expected.discard("resizer")
    if not has_container(render.controller, "csi-snapshotter"):
        expected.discard("snapshotter")
    expect(set(roles) == expected, f"roles {sorted(roles)} != {sorted(expected)}")
    for suffix, (role, table) in roles.items():
        expect(table == EXPECTED_RULES[suffix],
               f"{role['metadata']['name']}: rules {sorted((k, sorted(v)) for k, v in table.items())}")
        for (group, resource) in table:
            expect(resource != "secrets", f"{role['metadata']['name']} grants Secrets")
    leader = roles["leader-election"][0]
    expect(leader["kind"] == "Role", "leader election must be a namespaced Role")
    expect(leader["metadata"].get("namespace") == render.controller["metadata"].get("namespace"),
           "leases Role must be in the controller's namespace")
    for suffix in ("provisioner", "resizer", "snapshotter", "node"):
        if suffix in roles:
            expect(roles[suffix][0]["kind"] == "ClusterRole", f"{suffix} must be a ClusterRole")

    # Bindings: who gets what.
    sa_of = {
        "controller": (pod_spec(render.controller)["serviceAccountName"],
                       render.controller["metadata"].get("namespace")),
        "node": (pod_spec(render.node)["serviceAccountName"], render.node["metadata"].get("namespace")),
    }
    for sa_name, sa_ns in sa_of.values():
        expect(any(sa["metadata"]["name"] == sa_name and sa["metadata"].get("namespace") == sa_ns
                   for sa in render.of_kind("ServiceAccount")),
               f"ServiceAccount {sa_ns}/{sa_name} is not rendered")
    granted = {"controller": set(), "node": set()}
    role_names = {(r["kind"], r["metadata"]["name"]): s for s, (r, _) in roles.items()}
    for binding in render.of_kind("ClusterRoleBinding") + render.of_kind("RoleBinding"):
        ref = binding["roleRef"]
        key = (ref["kind"], ref["name"])
        expect(key in role_names, f"{binding['metadata']['name']}: roleRef {key} is not rendered")
        for subject in binding["subjects"]:
            who = [k for k, v in sa_of.items()
                   if subject["kind"] == "ServiceAccount" and (subject["name"], subject.get("namespace")) == v]
            expect(who, f"{binding['metadata']['name']}: subject {subject} is no pod's ServiceAccount")
            granted[who[0]].add(role_names[key])
    expect(granted["node"] == {"node"}, f"node ServiceAccount is bound to {granted['node']}")
    expect(granted["controller"] == expected - {"node"},
           f"controller ServiceAccount is bound to {granted['controller']}")


def check_sidecar_args(render):
    ctrl = render.controller
    provisioner = container(ctrl, "csi-provisioner")
    expect(flag(provisioner, "extra-create-metadata") is True, "provisioner needs --extra-create-metadata")
    for name in ("csi-provisioner", "csi-resizer", "csi-snapshotter"):
        if not has_container(ctrl, name):
            continue
        cont = container(ctrl, name)
        expect(flag(cont, "leader-election") is True, f"{name} needs --leader-election")
        namespace_flag = flag(cont, "leader-election-namespace")
        expect(namespace_flag == "$(POD_NAMESPACE)", f"{name}: leader election namespace {namespace_flag}")
        env = {e["name"]: e for e in cont.get("env", [])}
        expect(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
               == "metadata.namespace", f"{name}: POD_NAMESPACE must come from the downward API")
        timeout = flag(cont, "timeout")
        expect(timeout and re.fullmatch(r"\d+s", timeout), f"{name}: --timeout {timeout}")
    if has_container(ctrl, "csi-snapshotter"):
        snap = container(ctrl, "csi-snapshotter")
        expect(flag(snap, "feature-gates") == "CSIVolumeGroupSnapshot=false",
               "snapshotter must disable group snapshots (RBAC has no groupsnapshot rules)")
    if has_container(ctrl, "csi-resizer"):
        expect(flag(container(ctrl, "csi-resizer"), "handle-volume-inuse-error") == "false",
               "resizer runs with --handle-volume-inuse-error=false (RBAC has no pods)")
    replicas = ctrl["spec"].get("replicas", 1)
    if replicas > 1:
        expect(any(p["spec"]["selector"]["matchLabels"].items()
                   <= ctrl["spec"]["template"]["metadata"]["labels"].items()
                   for p in render.of_kind("PodDisruptionBudget")),
               "two controller replicas need a PodDisruptionBudget")
    # Liveness: each driver's livenessProbe targets the livenessprobe sidecar's port.
    for workload in (ctrl, render.node):
        driver = container(workload, "driver")
        port_name = driver["livenessProbe"]["httpGet"]["port"]
        port = next(p["containerPort"] for p in driver["ports"] if p["name"] == port_name)
        expect(flag(container(workload, "liveness-probe"), "health-port") == str(port),
               f"{workload['kind']}: driver livenessProbe port {port} is not the livenessprobe's")


def check_node_args(render):
    node = render.node
    driver = container(node, "driver")
    env = {e["name"]: e for e in driver.get("env", [])}
    expect(flag(driver, "node-id") == "$(NODE_ID)", "node driver --node-id must be $(NODE_ID)")
    expect(env["NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName",
           "NODE_ID must be the node name (topology and client labels are per Node)")
    expect(pod_spec(node).get("hostNetwork") is True, "node plugin runs in the host network")
    expect(pod_spec(node).get("dnsPolicy") == "ClusterFirstWithHostNet", "hostNetwork needs ClusterFirstWithHostNet")


def check_security(render):
    for workload in (render.controller, render.node):
        spec = pod_spec(workload)
        expect(spec.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault",
               f"{workload['kind']}: pod seccomp RuntimeDefault")
        expect(not spec.get("hostPID") and not spec.get("hostIPC"), f"{workload['kind']}: no hostPID/hostIPC")
        for cont in spec["containers"]:
            sc = cont.get("securityContext", {})
            expect(sc.get("readOnlyRootFilesystem") is True, f"{cont['name']}: read-only root filesystem")
            expect("resources" in cont and cont["resources"].get("limits", {}).get("memory"),
                   f"{cont['name']}: memory limit")
            if cont["name"] == "driver":
                continue
            expect(sc.get("privileged") in (None, False), f"{cont['name']}: sidecars are not privileged")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{cont['name']}: no privilege escalation")
            expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cont['name']}: drop ALL")
            expect(not sc.get("capabilities", {}).get("add"), f"{cont['name']}: adds capabilities")
            if workload["kind"] == "Deployment":
                # Root only to reach the driver's owner-only socket; otherwise
                # non-root in the socket directory's group.
                user = sc.get("runAsUser")
                expect(user is not None, f"controller {cont['name']}: runAsUser must be explicit")
                expect((sc.get("runAsNonRoot") is True) == (user > 0),
                       f"controller {cont['name']}: runAsNonRoot must match runAsUser {user}")
                expect(sc.get("runAsGroup") == spec["securityContext"].get("fsGroup"),
                       f"controller {cont['name']}: runAsGroup must be the pod fsGroup (socket access)")
        for vol in spec.get("volumes", []):
            host = vol.get("hostPath", {}).get("path")
            expect(host not in ("/", "/etc", "/var", "/proc", "/sys", "/dev"),
                   f"{workload['kind']}: mounts the host's {host}")


def check_images(render):
    for workload in (render.controller, render.node):
        for cont in pod_spec(workload)["containers"]:
            if cont["name"] == "driver":
                expect(re.search(r"(^|/)pfs-csi(:[^:@/]+|@sha256:[0-9a-f]{64})$", cont["image"]),
                       f"{workload['kind']} driver image {cont['image']} is not the pfs-csi image")
                continue
            pattern = SIDECAR_IMAGES.get(cont["name"])
            expect(pattern, f"unknown sidecar {cont['name']}")
            expect(re.match(pattern, cont["image"]), f"{cont['name']} image {cont['image']}")


PER_RENDER_CHECKS = [
    check_csidriver,
    check_binaries,
    check_node_socket_shared,
    check_controller_socket_shared,
    check_propagation,
    check_state_dir,
    check_filesystem_wiring,
    check_files_exist,
    check_rbac,
    check_sidecar_args,
    check_node_args,
    check_security,
    check_images,
]


def normalized(render):
    """What must not differ between the Helm and kustomize installations."""
    roles = {s: t for s, (_, t) in rules_by_role(render).items()}
    args = {}
    for workload in (render.controller, render.node):
        for cont in pod_spec(workload)["containers"]:
            kept = sorted(a for a in cont.get("args", [])
                          if not a.startswith(("--leader-election-lease", "--leader-election-renew",
                                               "--leader-election-retry", "--config=",
                                               "--beegfs-connauth-file=", "--beegfs-tls-cert-file=")))
            args[(workload["kind"], cont["name"])] = kept
    props = {
        (workload["kind"], cont["name"]): sorted(
            (m["mountPath"], m.get("mountPropagation", "None")) for m in cont.get("volumeMounts", [])
            if m.get("mountPropagation") or m["mountPath"] in ("/csi", "/registration"))
        for workload in (render.controller, render.node) for cont in pod_spec(workload)["containers"]
    }
    return roles, args, props


def check_helm_matches_kustomize(helm, kustomize):
    h_roles, h_args, h_props = normalized(helm)
    k_roles, k_args, k_props = normalized(kustomize)
    expect(h_roles == k_roles, "RBAC differs between Helm and kustomize")
    for key in sorted(set(h_args) | set(k_args)):
        expect(h_args.get(key) == k_args.get(key),
               f"{key} args differ: helm {h_args.get(key)} kustomize {k_args.get(key)}")
    if helm.name.endswith("beegfs"):
        expect(h_props == k_props, f"mounts differ: helm {h_props} kustomize {k_props}")


# ---------------------------------------------------------------- helm variants


def helm_template(helm, chart, *values):
    cmd = [helm, "template", "t", chart, "--namespace", "pfs-csi"]
    for item in values:
        cmd += item
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def check_helm_variants(helm, chart):
    lustre_values = ["-f", os.path.join(chart, "ci", "lustre-values.yaml")]
    # Takeover of the EXAScaler driver name with a non-default kubelet directory.
    result = helm_template(helm, chart, lustre_values,
                           ["--set", "driverName=exa.csi.ddn.com,kubeletDir=/var/lib/k0s/kubelet/"])
    expect(result.returncode == 0, f"helm template (exa name, k0s): {result.stderr}")
    render = Render("helm-lustre", yaml.safe_load_all(result.stdout))
    expect(driver_settings(render) == ("exa.csi.ddn.com", "/var/lib/k0s/kubelet"),
           "driver name / kubelet dir not applied")
    for check in (check_csidriver, check_node_socket_shared, check_propagation, check_state_dir,
                  check_files_exist):
        check(render)

    # The EXAScaler file given as text (--set-file) is kept byte for byte.
    text = "exaFS: 10.3.196.24@tcp:/csi\nmountPoint: /exaFS\ndebug: true\n"
    result = helm_template(helm, chart, ["--set", "lustre.enabled=true", "--set-string",
                                         f"config.exascaler={text}"])
    expect(result.returncode == 0, f"helm template (flat v1.x text): {result.stderr}")
    secret = next(o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "Secret")
    expect(secret["stringData"]["exascaler-csi-file-driver-config.yaml"] == text,
           "EXAScaler configuration text was altered")

    # Non-root controller sidecars for a group-accessible driver socket.
    result = helm_template(helm, chart, lustre_values, ["--set", "controller.sidecarUser=65532"])
    expect(result.returncode == 0, result.stderr)
    render = Render("helm-lustre", yaml.safe_load_all(result.stdout))
    check_security(render)
    for cont in pod_spec(render.controller)["containers"]:
        if cont["name"] != "driver":
            expect(cont["securityContext"]["runAsUser"] == 65532 and cont["securityContext"]["runAsNonRoot"],
                   f"{cont['name']} is not non-root with sidecarUser=65532")

    # One replica: no PodDisruptionBudget that would block drains forever.
    result = helm_template(helm, chart, lustre_values, ["--set", "controller.replicas=1"])
    expect(result.returncode == 0, result.stderr)
    expect(not [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "PodDisruptionBudget"],
           "PodDisruptionBudget with one replica")

    # Sidecar images are set one by one; our image never replaces them.
    result = helm_template(helm, chart, lustre_values,
                           ["--set", "image.repository=example.org/pfs-csi,image.tag=9.9.9"])
    render = Render("helm-lustre", yaml.safe_load_all(result.stdout))
    check_images(render)
    expect(container(render.node, "driver")["image"] == "example.org/pfs-csi:9.9.9", "image override")

    # Disabled snapshotter/resizer: their containers and their RBAC go together.
    result = helm_template(helm, chart, lustre_values,
                           ["--set", "controller.snapshotter.enabled=false,controller.resizer.enabled=false"])
    render = Render("helm-lustre", yaml.safe_load_all(result.stdout))
    expect(not has_container(render.controller, "csi-snapshotter"), "snapshotter still deployed")
    check_rbac(render)

    # Invalid input fails at install time, with the reason.
    bad = {
        "unknown key": (["--set", "controller.replica=3"], "replica"),
        "bad driver name": (["--set", "driverName=Not_A_Name"], "driverName"),
        "relative kubelet dir": (["--set", "kubeletDir=var/lib/kubelet"], "kubeletDir"),
        "lustre without config": (["--set", "beegfs.enabled=true",
                                   "--set", "config.beegfs.config.connInterfaces[0]=eth0"], "config.exascaler"),
        "no config at all": ([], "config"),
        "existing Secret without files": (["--set", "config.existingSecret.name=mine"], "existingSecret.files"),
        "bad log format": (lustre_values + ["--set", "logFormat=xml"], "logFormat"),
    }
    for what, (values, needle) in bad.items():
        result = helm_template(helm, chart, values)
        expect(result.returncode != 0, f"helm accepted {what}")
        expect(needle in result.stderr, f"{what}: error does not name {needle!r}: {result.stderr.strip()}")


def helm_both_default(helm, chart):
    result = helm_template(helm, chart, ["-f", os.path.join(chart, "ci", "lustre-values.yaml")],
                           ["-f", os.path.join(chart, "ci", "beegfs-values.yaml")],
                           ["--set", "lustre.enabled=true,controller.replicas=2"])
    expect(result.returncode == 0, result.stderr)
    return Render("helm-both", yaml.safe_load_all(result.stdout))


# ---------------------------------------------------------------- OpenShift


def load_dir(path):
    objects = []
    for directory, _, files in os.walk(path):
        for file in sorted(files):
            if file.endswith(".yaml") and file != "kustomization.yaml":
                with open(os.path.join(directory, file), encoding="utf-8") as handle:
                    objects += [o for o in yaml.safe_load_all(handle) if o]
    return objects


def check_openshift(repo, kustomize_both):
    objects = load_dir(os.path.join(repo, "deploy", "openshift"))
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    expect(all(o["metadata"].get("namespace", "pfs-csi") == "pfs-csi" for o in objects),
           "OpenShift objects must live in namespace pfs-csi")
    config_maps = by_kind.get("ConfigMap", {})
    streams = by_kind.get("ImageStream", {})
    accounts = by_kind.get("ServiceAccount", {})

    # The SCC is granted to the driver's ServiceAccounts, whatever installs them.
    driver_accounts = {(pod_spec(w)["serviceAccountName"], w["metadata"]["namespace"])
                       for w in (kustomize_both.controller, kustomize_both.node)}
    scc_binding = by_kind["RoleBinding"]["pfs-csi-scc"]
    expect({(s["name"], s["namespace"]) for s in scc_binding["subjects"]} == driver_accounts,
           "SCC RoleBinding subjects are not the driver's ServiceAccounts")
    expect(by_kind["ClusterRole"]["pfs-csi-scc"]["rules"][0]["resourceNames"] == ["pfs-csi"],
           "SCC use must name the pfs-csi SCC only")
    scc = by_kind["SecurityContextConstraints"]["pfs-csi"]
    expect(not scc["allowHostPID"] and not scc["allowHostIPC"], "SCC grants host PID/IPC")

    # Builds: their ConfigMaps exist and they output into a defined ImageStream.
    for name, build in by_kind.get("BuildConfig", {}).items():
        for source in build["spec"]["source"].get("configMaps", []):
            expect(source["configMap"]["name"] in config_maps,
                   f"BuildConfig {name}: ConfigMap {source['configMap']['name']} is not defined")
        stream = build["spec"]["output"]["to"]["name"].split(":")[0]
        expect(stream in streams, f"BuildConfig {name}: ImageStream {stream} is not defined")
        base = build["spec"]["strategy"]["dockerStrategy"]["from"]
        expect(base["name"].startswith("driver-toolkit:") and base["namespace"] == "openshift",
               f"BuildConfig {name} must build on the driver-toolkit ImageStreamTag")
        expect({t["type"] for t in build["spec"]["triggers"]} >= {"ImageChange"},
               f"BuildConfig {name} must rebuild when driver-toolkit changes")

    # KMM Modules: per-kernel images, an existing Dockerfile and ServiceAccount,
    # LNet before the modules that need it.
    modules = by_kind.get("Module", {})
    expect({"lnet", "ko2iblnd", "lustre", "beegfs"} <= set(modules), f"Modules {sorted(modules)}")
    for name, module in modules.items():
        loader = module["spec"]["moduleLoader"]
        expect(loader["serviceAccountName"] in accounts, f"Module {name}: ServiceAccount not defined")
        for mapping in loader["container"]["kernelMappings"]:
            expect("${KERNEL_FULL_VERSION}" in mapping["containerImage"],
                   f"Module {name}: one image per kernel (${{KERNEL_FULL_VERSION}})")
            if "build" in mapping:
                expect(mapping["build"]["dockerfileConfigMap"]["name"] in config_maps,
                       f"Module {name}: Dockerfile ConfigMap is not defined")
    for name in ("ko2iblnd", "lustre"):
        expect("kmm.node.kubernetes.io/pfs-csi.lnet.ready" in modules[name]["spec"]["selector"],
               f"Module {name} must wait for LNet")
    built_images = {m["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"]
                    for m in modules.values() if "build" in m["spec"]["moduleLoader"]["container"]["kernelMappings"][0]}
    for name in ("ko2iblnd", "lustre"):
        image = modules[name]["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"]
        expect(image in built_images, f"Module {name} loads an image no Module builds")

    # Client DaemonSets: tools land in <kubeletDir>/plugins/<driverName>/client of
    # the default installation, which is where the driver looks.
    driver_name, kubelet_dir = driver_settings(kustomize_both)
    client_dir = f"{kubelet_dir}/plugins/{driver_name}/client"
    lnet_config = config_maps["lnet-config"]["data"]
    expect({"LNET_NETWORK", "LNET_INTERFACE"} <= set(lnet_config), "LNet parameters missing")
    daemonsets = by_kind.get("DaemonSet", {})
    expect({"lnet-configuration", "beegfs7-client", "beegfs8-client", "beegfs-tools"} <= set(daemonsets),
           f"DaemonSets {sorted(daemonsets)}")
    for name, ds in daemonsets.items():
        spec = pod_spec(ds)
        expect(spec["serviceAccountName"] in accounts, f"DaemonSet {name}: ServiceAccount not defined")
        cont = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in cont.get("env", [])}
        for ref in cont.get("envFrom", []):
            env.update(config_maps[ref["configMapRef"]["name"]]["data"])
        expect(env.get("CLIENT_DIR") == client_dir, f"DaemonSet {name}: CLIENT_DIR {env.get('CLIENT_DIR')}")
        expect(resolve(ds, cont, client_dir) == ("host", client_dir),
               f"DaemonSet {name}: CLIENT_DIR is not the host's {client_dir}")
        stream = cont["image"].split(":")[0]
        expect(stream in streams, f"DaemonSet {name}: image {cont['image']} is no ImageStream here")
        expect(ds["spec"]["template"]["metadata"]["annotations"].get(
            "alpha.image.policy.openshift.io/resolve-names") == "*",
            f"DaemonSet {name}: ImageStream names need the resolve-names annotation")
    lnet = pod_spec(daemonsets["lnet-configuration"])
    expect(lnet["nodeSelector"] == {"kmm.node.kubernetes.io/pfs-csi.lnet.ready": ""},
           "LNet DaemonSet must run where KMM loaded LNet")
    scripts = config_maps["lustre-client-scripts"]["data"]
    expect("lnetctl net add --net \"$LNET_NETWORK\" --if \"$LNET_INTERFACE\"" in scripts["lnet-up.sh"],
           "LNet DaemonSet does not use its parameters")
    expect("/proc/1/mounts" in scripts["lnet-down.sh"] and lnet.get("hostPID") is True,
           "LNet preStop must see the host's mounts before unconfiguring")


# ---------------------------------------------------------------- examples

# StorageClass / volumeAttributes keys the backends accept (reference docs).
LUSTRE_KEYS = {
    "configName", "exaFS", "mountPoint", "projectId", "minProjectId", "maxProjectId",
    "generateProjectIdRetries", "exaMountUid", "exaMountGid", "bindMount", "mountOptions",
    "managementIp", "zone", "tempMountPoint", "volumeDirPermissions", "v1xCompatible",
}
BEEGFS_KEYS = {
    "sysMgmtdHost", "volDirBasePath", "stripePattern/storagePoolID", "stripePattern/chunkSize",
    "stripePattern/numTargets", "permissions/uid", "permissions/gid", "permissions/mode",
}
SNAPSHOT_KEYS = {"snapshotFolder", "snapshotUtility", "dtarPath", "snapshotMd5Verify", "snapshotChecksum"}


def check_examples(repo, driver_name):
    objects = load_dir(os.path.join(repo, "examples"))
    kinds = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    expect(len(objects) >= 15, "examples are missing")
    for name, sc in kinds["StorageClass"].items():
        expect(sc["provisioner"] == driver_name, f"StorageClass {name}: provisioner")
        keys = set(sc.get("parameters", {}))
        expect(keys <= LUSTRE_KEYS or keys <= BEEGFS_KEYS,
               f"StorageClass {name}: unknown or mixed parameters {sorted(keys - LUSTRE_KEYS - BEEGFS_KEYS)}")
        for term in sc.get("allowedTopologies", []):
            for expr in term["matchLabelExpressions"]:
                expect(expr["key"] in ("topology.exa.csi.ddn.com/zone", f"{driver_name}/lustre-client",
                                       f"{driver_name}/beegfs-client"),
                       f"StorageClass {name}: topology key {expr['key']} is not reported by the node plugin")
    for name, vsc in kinds["VolumeSnapshotClass"].items():
        expect(vsc["driver"] == driver_name, f"VolumeSnapshotClass {name}: driver")
        expect(set(vsc.get("parameters", {})) <= SNAPSHOT_KEYS, f"VolumeSnapshotClass {name}: parameters")
    for name, pv in kinds["PersistentVolume"].items():
        csi = pv["spec"]["csi"]
        expect(csi["driver"] == driver_name, f"PV {name}: driver")
        expect(len(csi["volumeHandle"].encode()) <= 128, f"PV {name}: volume id over 128 bytes")
        expect(re.match(r"^(beegfs://[^/]+/.+|[A-Za-z0-9_.-]+:/.+|/.+)$", csi["volumeHandle"]),
               f"PV {name}: handle {csi['volumeHandle']} is in no known form")
        expect(set(csi.get("volumeAttributes", {})) <= LUSTRE_KEYS | BEEGFS_KEYS, f"PV {name}: attributes")
    for name, pvc in kinds["PersistentVolumeClaim"].items():
        sc_name = pvc["spec"].get("storageClassName")
        expect(sc_name == "" or sc_name in kinds["StorageClass"], f"PVC {name}: StorageClass {sc_name}")
        source = pvc["spec"].get("dataSource")
        if source:
            expect(source["name"] in kinds["VolumeSnapshot"], f"PVC {name}: snapshot {source['name']}")
    for name, snap in kinds["VolumeSnapshot"].items():
        expect(snap["spec"]["volumeSnapshotClassName"] in kinds["VolumeSnapshotClass"], f"snapshot {name}: class")
        expect(snap["spec"]["source"]["persistentVolumeClaimName"] in kinds["PersistentVolumeClaim"],
               f"snapshot {name}: source claim")
    for name, pod in kinds["Pod"].items():
        for vol in pod["spec"]["volumes"]:
            claim = vol["persistentVolumeClaim"]["claimName"]
            expect(claim in kinds["PersistentVolumeClaim"], f"Pod {name}: claim {claim}")


# ---------------------------------------------------------------- binaries


def cargo_binaries(repo):
    """Binary targets of the workspace: the root package's and every member's
    [[bin]] entries, or a member's package name when it has src/main.rs."""
    import glob

    def load(path):
        with open(path, "rb") as handle:
            return tomllib.load(handle)

    root = load(os.path.join(repo, "Cargo.toml"))
    manifests = [(repo, root)]
    for pattern in root.get("workspace", {}).get("members", []):
        for member in sorted(glob.glob(os.path.join(repo, pattern))):
            path = os.path.join(member, "Cargo.toml")
            if os.path.abspath(member) != os.path.abspath(repo) and os.path.isfile(path):
                manifests.append((member, load(path)))
    names = set()
    for directory, manifest in manifests:
        bins = {b["name"] for b in manifest.get("bin", [])}
        if not bins and "package" in manifest and os.path.isfile(os.path.join(directory, "src", "main.rs")):
            bins = {manifest["package"]["name"]}
        names |= bins
    return names


def check_dockerfile(repo):
    declared = cargo_binaries(repo)
    expect(set(BINARIES) <= declared, f"Cargo.toml [[bin]] {sorted(declared)} lacks {BINARIES}")
    with open(os.path.join(repo, "Dockerfile"), encoding="utf-8") as handle:
        text = handle.read()
    expect("pfs-csi-sim" not in text and "pfs-sim" not in text, "the simulator must not be in the image")
    copied = re.findall(r"^COPY\s+--from=\S+\s+(\S+)\s+(\S+)\s*$", text, re.MULTILINE)
    finals = {}
    for source, dest in copied:
        name = os.path.basename(source)
        if name in BINARIES:
            expect(source.endswith(f"/release/{name}"), f"{name} must come from a release build: {source}")
            finals.setdefault(name, set()).add(dest if not dest.endswith("/") else dest + name)
    for name in BINARIES:
        expect(name in finals, f"Dockerfile does not copy {name}")
        expect(f"/usr/bin/{name}" in finals[name], f"{name} is not copied to /usr/bin/{name}")
    expect(re.search(r"^\s*bash scripts/build-release\.sh\b", text, re.M) is not None,
           "the builder must run scripts/build-release.sh (release build, static node plugin)")


def check_binary_mentions(repo):
    """Every /usr/bin/pfs... path named anywhere in deploy/, examples/, docs/
    and the Dockerfile is one of the three binaries."""
    roots = ["deploy", "examples", "docs", "Dockerfile"]
    seen = 0
    for root in roots:
        path = os.path.join(repo, root)
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        for file in files:
            if file.endswith(os.path.join("tests", "test_rendered.py")):
                continue
            try:
                with open(file, encoding="utf-8") as handle:
                    text = handle.read()
            except (UnicodeDecodeError, FileNotFoundError):
                continue
            for match in re.finditer(r"/usr/(?:local/)?s?bin/(pfs[-\w]*)", text):
                seen += 1
                expect(match.group(1) in BINARIES,
                       f"{os.path.relpath(file, repo)} names /usr/bin/{match.group(1)}, not a driver binary")
                expect(match.group(0) == f"/usr/bin/{match.group(1)}",
                       f"{os.path.relpath(file, repo)}: {match.group(0)} (the image has /usr/bin only)")
    expect(seen >= 3, "no binary paths found at all: is the search broken?")


def check_built_binaries(repo, target_dir):
    """When release binaries were built, they are the ones the image copies."""
    release = os.path.join(target_dir, "release")
    for name in BINARIES:
        path = os.path.join(release, name)
        expect(os.path.isfile(path) and os.access(path, os.X_OK), f"{path} was not built")


# ---------------------------------------------------------------- runner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-dir", required=True)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--built-target-dir", help="check release binaries there too")
    args = parser.parse_args()
    chart = os.path.join(args.repo, "deploy", "helm", "pfs-csi")

    tests = []
    renders = {}
    for tool in ("helm", "kustomize"):
        for fs in FILESYSTEMS:
            path = os.path.join(args.render_dir, f"{tool}-{fs}.yaml")
            tests.append((f"load {tool}-{fs}", lambda p=path: renders.__setitem__(
                os.path.basename(p).removesuffix(".yaml"), load_render(p))))
    for tool in ("helm", "kustomize"):
        for fs in FILESYSTEMS:
            name = f"{tool}-{fs}"
            for check in PER_RENDER_CHECKS:
                tests.append((f"{name}: {check.__name__}", lambda c=check, n=name: c(renders[n])))
    for fs in ("lustre", "beegfs"):
        tests.append((f"helm-{fs} matches kustomize-{fs}",
                      lambda f=fs: check_helm_matches_kustomize(renders[f"helm-{f}"], renders[f"kustomize-{f}"])))
    # ci/both-values.yaml changes the kubelet directory on purpose: compare the
    # kustomize "both" overlay with the Lustre and BeeGFS values combined.
    tests.append(("helm lustre+beegfs matches kustomize-both",
                  lambda: check_helm_matches_kustomize(helm_both_default(args.helm, chart), renders["kustomize-both"])))
    tests.append(("helm variants", lambda: check_helm_variants(args.helm, chart)))
    tests.append(("examples", lambda: check_examples(args.repo, driver_settings(renders["kustomize-both"])[0])))
    tests.append(("OpenShift manifests", lambda: check_openshift(args.repo, renders["kustomize-both"])))
    tests.append(("Dockerfile binaries", lambda: check_dockerfile(args.repo)))
    tests.append(("binary paths named in deploy, examples, docs", lambda: check_binary_mentions(args.repo)))
    if args.built_target_dir:
        tests.append(("release binaries built", lambda: check_built_binaries(args.repo, args.built_target_dir)))

    passed = failed = 0
    for name, test in tests:
        try:
            test()
            passed += 1
            print(f"ok   {name}")
        except Failure as err:
            failed += 1
            print(f"FAIL {name}: {err}")
        except Exception:  # a bug in a check or a malformed render: loud, not silent
            failed += 1
            print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
