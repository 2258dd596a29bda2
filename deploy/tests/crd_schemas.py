"""Structural schemas of the custom resources our manifests use.

kubernetes-validate knows only built-in kinds. These schemas hold the fields of
the upstream CRDs that our manifests use (names and types as in the published
API types), reject unknown fields where the manifests are ours to get right,
and require what the controllers need. They are no substitute for the CRDs
installed on a cluster: `kubectl apply --dry-run=server` there is the final word.
"""

DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": DNS_NAME,
        "namespace": DNS_NAME,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}


def resource(api_version, kind, spec=None, required=("spec",), extra=None, namespaced=True):
    """A top-level object schema: apiVersion, kind, metadata, and the rest."""
    properties = {
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        "metadata": METADATA,
    }
    if spec is not None:
        properties["spec"] = spec
    properties.update(extra or {})
    schema = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", *required],
        "additionalProperties": False,
        "properties": properties,
    }
    if not namespaced:
        schema["properties"]["metadata"] = {
            **METADATA,
            "not": {"required": ["namespace"]},
        }
    return schema


LOCAL_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": DNS_NAME},
}

KMM_BUILD = {
    "type": "object",
    "required": ["dockerfileConfigMap"],
    "additionalProperties": False,
    "properties": {
        "buildArgs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "dockerfileConfigMap": LOCAL_REF,
        "baseImageRegistryTLS": {"type": "object"},
        "secrets": {"type": "array", "items": LOCAL_REF},
        "kanikoParams": {"type": "object"},
        "selector": STRING_MAP,
    },
}

KMM_MODULE = resource(
    "kmm.sigs.x-k8s.io/v1beta1",
    "Module",
    {
        "type": "object",
        "required": ["selector", "moduleLoader"],
        "additionalProperties": False,
        "properties": {
            "selector": STRING_MAP,
            "tolerations": {"type": "array"},
            "imageRepoSecret": LOCAL_REF,
            "devicePlugin": {"type": "object"},
            "imageRebuildTriggerGeneration": {"type": "integer"},
            "moduleLoader": {
                "type": "object",
                "required": ["container"],
                "additionalProperties": False,
                "properties": {
                    "serviceAccountName": DNS_NAME,
                    "container": {
                        "type": "object",
                        "required": ["kernelMappings", "modprobe"],
                        "additionalProperties": False,
                        "properties": {
                            "build": KMM_BUILD,
                            "sign": {"type": "object"},
                            "version": {"type": "string"},
                            "containerImage": {"type": "string"},
                            "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                            "registryTLS": {"type": "object"},
                            "inTreeModulesToRemove": {"type": "array", "items": {"type": "string"}},
                            "modprobe": {
                                "type": "object",
                                "required": ["moduleName"],
                                "additionalProperties": False,
                                "properties": {
                                    "moduleName": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
                                    "parameters": {"type": "array", "items": {"type": "string"}},
                                    "dirName": {"type": "string"},
                                    "args": {"type": "object"},
                                    "rawArgs": {"type": "object"},
                                    "firmwarePath": {"type": "string"},
                                    "modulesLoadingOrder": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                    },
                                },
                            },
                            "kernelMappings": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["containerImage"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["regexp"]}, {"required": ["literal"]}],
                                    "properties": {
                                        "regexp": {"type": "string", "minLength": 1},
                                        "literal": {"type": "string", "minLength": 1},
                                        "containerImage": {"type": "string", "minLength": 1},
                                        "build": KMM_BUILD,
                                        "sign": {"type": "object"},
                                        "registryTLS": {"type": "object"},
                                        "inTreeModulesToRemove": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
)

VOLUME_SNAPSHOT_CLASS = resource(
    "snapshot.storage.k8s.io/v1",
    "VolumeSnapshotClass",
    required=("driver", "deletionPolicy"),
    extra={
        "driver": DNS_NAME,
        "deletionPolicy": {"enum": ["Delete", "Retain"]},
        "parameters": STRING_MAP,
    },
    namespaced=False,
)

VOLUME_SNAPSHOT = resource(
    "snapshot.storage.k8s.io/v1",
    "VolumeSnapshot",
    {
        "type": "object",
        "required": ["source"],
        "additionalProperties": False,
        "properties": {
            "volumeSnapshotClassName": DNS_NAME,
            "source": {
                "type": "object",
                "additionalProperties": False,
                "oneOf": [
                    {"required": ["persistentVolumeClaimName"]},
                    {"required": ["volumeSnapshotContentName"]},
                ],
                "properties": {
                    "persistentVolumeClaimName": DNS_NAME,
                    "volumeSnapshotContentName": DNS_NAME,
                },
            },
        },
    },
)

OBJECT_REF = {
    "type": "object",
    "required": ["kind", "name"],
    "properties": {
        "kind": {"enum": ["ImageStreamTag", "DockerImage", "ImageStreamImage"]},
        "name": {"type": "string", "minLength": 1},
        "namespace": DNS_NAME,
    },
}

BUILD_CONFIG = resource(
    "build.openshift.io/v1",
    "BuildConfig",
    {
        "type": "object",
        "required": ["strategy", "output"],
        "additionalProperties": False,
        "properties": {
            "runPolicy": {"enum": ["Serial", "Parallel", "SerialLatestOnly"]},
            "successfulBuildsHistoryLimit": {"type": "integer"},
            "failedBuildsHistoryLimit": {"type": "integer"},
            "nodeSelector": {"type": ["object", "null"]},
            "resources": {"type": "object"},
            "source": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": ["Dockerfile", "Git", "Binary", "Image", "None"]},
                    "dockerfile": {"type": "string"},
                    "configMaps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["configMap"],
                            "properties": {
                                "configMap": LOCAL_REF,
                                "destinationDir": {"type": "string"},
                            },
                        },
                    },
                    "secrets": {"type": "array"},
                    "git": {"type": "object"},
                },
            },
            "strategy": {
                "type": "object",
                "required": ["type", "dockerStrategy"],
                "additionalProperties": False,
                "properties": {
                    "type": {"const": "Docker"},
                    "dockerStrategy": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "from": OBJECT_REF,
                            "buildArgs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "value": {"type": "string"},
                                    },
                                },
                            },
                            "noCache": {"type": "boolean"},
                            "forcePull": {"type": "boolean"},
                            "dockerfilePath": {"type": "string"},
                            "env": {"type": "array"},
                            "volumes": {"type": "array"},
                        },
                    },
                },
            },
            "output": {
                "type": "object",
                "required": ["to"],
                "additionalProperties": False,
                "properties": {"to": OBJECT_REF},
            },
            "triggers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"enum": ["ImageChange", "ConfigChange", "GitHub", "Generic"]},
                        "imageChange": {
                            "type": "object",
                            "properties": {"from": OBJECT_REF},
                        },
                    },
                },
            },
        },
    },
)

IMAGE_STREAM = resource(
    "image.openshift.io/v1",
    "ImageStream",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lookupPolicy": {
                "type": "object",
                "properties": {"local": {"type": "boolean"}},
                "additionalProperties": False,
            },
            "tags": {"type": "array"},
        },
    },
    required=(),
)

STRATEGY = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string"},
        "uid": {"type": "integer"},
        "uidRangeMin": {"type": "integer"},
        "uidRangeMax": {"type": "integer"},
        "seLinuxOptions": {"type": "object"},
        "ranges": {"type": "array"},
    },
}

SCC_BOOL_FIELDS = [
    "allowPrivilegedContainer",
    "allowHostDirVolumePlugin",
    "allowHostIPC",
    "allowHostNetwork",
    "allowHostPID",
    "allowHostPorts",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "defaultAllowPrivilegeEscalation",
]

SECURITY_CONTEXT_CONSTRAINTS = resource(
    "security.openshift.io/v1",
    "SecurityContextConstraints",
    required=tuple(
        ["allowPrivilegedContainer", "allowHostDirVolumePlugin", "runAsUser", "seLinuxContext"]
    ),
    extra={
        **{field: {"type": "boolean"} for field in SCC_BOOL_FIELDS},
        "priority": {"type": ["integer", "null"]},
        "allowedCapabilities": {"type": ["array", "null"], "items": {"type": "string"}},
        "defaultAddCapabilities": {"type": ["array", "null"], "items": {"type": "string"}},
        "requiredDropCapabilities": {"type": ["array", "null"], "items": {"type": "string"}},
        "allowedUnsafeSysctls": {"type": ["array", "null"]},
        "forbiddenSysctls": {"type": ["array", "null"]},
        "seccompProfiles": {"type": ["array", "null"], "items": {"type": "string"}},
        "fsGroup": STRATEGY,
        "runAsUser": STRATEGY,
        "seLinuxContext": STRATEGY,
        "supplementalGroups": STRATEGY,
        "volumes": {"type": "array", "items": {"type": "string"}},
        "users": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
    },
    namespaced=False,
)

CRD_SCHEMAS = {
    ("kmm.sigs.x-k8s.io/v1beta1", "Module"): KMM_MODULE,
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): VOLUME_SNAPSHOT_CLASS,
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): VOLUME_SNAPSHOT,
    ("build.openshift.io/v1", "BuildConfig"): BUILD_CONFIG,
    ("image.openshift.io/v1", "ImageStream"): IMAGE_STREAM,
    ("security.openshift.io/v1", "SecurityContextConstraints"): SECURITY_CONTEXT_CONSTRAINTS,
}
