{{/* Names, labels, images and paths shared by the templates. */}}

{{- define "pfs-csi.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; cluster-scoped objects carry it too, so two
releases (two driver names) never collide. */}}
{{- define "pfs-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pfs-csi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pfs-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (list $ "controller"). */}}
{{- define "pfs-csi.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "pfs-csi.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "pfs-csi.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "pfs-csi.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "pfs-csi.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "pfs-csi.fullname" .)) .Values.node.serviceAccount.name -}}
{{- end -}}

{{/* Image reference from {repository, tag, digest}: pass (list $ imageMap).
A digest wins over a tag; our image's tag defaults to appVersion. */}}
{{- define "pfs-csi.imageRef" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion ($img.tag | toString)) -}}
{{- end -}}
{{- end -}}

{{/* The driver image of one component: the top-level image, field by field
overridden by <component>.driver.image. Pass (list $ "controller"). */}}
{{- define "pfs-csi.driverImage" -}}
{{- $root := index . 0 -}}
{{- $override := (index $root.Values (index . 1)).driver.image | default dict -}}
{{- $img := merge (deepCopy $override) (deepCopy $root.Values.image) -}}
{{- include "pfs-csi.imageRef" (list $root $img) -}}
{{- end -}}

{{- define "pfs-csi.driverImagePullPolicy" -}}
{{- $root := index . 0 -}}
{{- $override := (index $root.Values (index . 1)).driver.image | default dict -}}
{{- default $root.Values.image.pullPolicy $override.pullPolicy -}}
{{- end -}}

{{/* Host directory of the node plugin: socket, state (state/) and the
filesystem client tools (client/). */}}
{{- define "pfs-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (.Values.kubeletDir | trimSuffix "/") .Values.driverName -}}
{{- end -}}

{{/* The node plugin's state directory (staging records, shared-mount reference
counts, BeeGFS client files and shared client mounts): on the host, so it
outlives restarts of the plugin, next to its socket. */}}
{{- define "pfs-csi.nodeStateDir" -}}
{{- printf "%s/state" (include "pfs-csi.pluginDir" .) -}}
{{- end -}}

{{/* The controller's state directory (BeeGFS client files and client mounts,
Lustre temporary mounts): an emptyDir, kept across container restarts; what
it holds is rebuilt on demand in a new pod. */}}
{{- define "pfs-csi.controllerStateDir" -}}
/var/lib/pfs-csi
{{- end -}}

{{- define "pfs-csi.nodeSocket" -}}
{{- printf "%s/csi.sock" (include "pfs-csi.pluginDir" .) -}}
{{- end -}}

{{- define "pfs-csi.configSecretName" -}}
{{- if .Values.config.existingSecret.name -}}
{{- .Values.config.existingSecret.name -}}
{{- else -}}
{{- printf "%s-config" (include "pfs-csi.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Keys of the configuration Secret that are passed with --config, one per line. */}}
{{- define "pfs-csi.configFiles" -}}
{{- if .Values.config.existingSecret.name -}}
{{- range .Values.config.existingSecret.files }}
{{ . }}
{{- end -}}
{{- else -}}
{{- if .Values.config.exascaler }}
exascaler-csi-file-driver-config.yaml
{{- end -}}
{{- if .Values.config.beegfs }}
csi-beegfs-config.yaml
{{- end -}}
{{- if .Values.config.pfsCsi }}
pfs-csi.yaml
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pfs-csi.connAuthSecretName" -}}
{{- default (printf "%s-beegfs-connauth" (include "pfs-csi.fullname" .)) .Values.beegfs.connAuth.existingSecret -}}
{{- end -}}

{{- define "pfs-csi.tlsSecretName" -}}
{{- default (printf "%s-beegfs-tls" (include "pfs-csi.fullname" .)) .Values.beegfs.tls.existingSecret -}}
{{- end -}}

{{- define "pfs-csi.connAuthEnabled" -}}
{{- if and .Values.beegfs.enabled (or .Values.beegfs.connAuth.existingSecret .Values.beegfs.connAuth.entries) -}}true{{- end -}}
{{- end -}}

{{- define "pfs-csi.tlsEnabled" -}}
{{- if and .Values.beegfs.enabled (or .Values.beegfs.tls.existingSecret .Values.beegfs.tls.entries) -}}true{{- end -}}
{{- end -}}

{{/* Arguments common to both driver binaries: pass (list $ "controller"). */}}
{{- define "pfs-csi.driverCommonArgs" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
- --driver-name={{ $root.Values.driverName }}
- --node-id=$(NODE_ID)
- --kubelet-dir={{ $root.Values.kubeletDir | trimSuffix "/" }}
- --log-format={{ $root.Values.logFormat }}
- --log-level={{ $root.Values.logLevel }}
{{- range (include "pfs-csi.configFiles" $root | trim | splitList "\n") }}
{{- if . }}
- --config=/etc/pfs-csi/config/{{ . }}
{{- end }}
{{- end }}
{{- if include "pfs-csi.connAuthEnabled" $root }}
- --beegfs-connauth-file=/etc/pfs-csi/beegfs-connauth/{{ $root.Values.beegfs.connAuth.key }}
{{- end }}
{{- if include "pfs-csi.tlsEnabled" $root }}
- --beegfs-tls-cert-file=/etc/pfs-csi/beegfs-tls/{{ $root.Values.beegfs.tls.key }}
{{- end }}
{{- with (index $root.Values $component).metrics }}
{{- if .enabled }}
- --metrics-address=0.0.0.0:{{ .port }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes common to both driver pods: configuration and BeeGFS secrets. */}}
{{- define "pfs-csi.configVolumes" -}}
- name: config
  secret:
    secretName: {{ include "pfs-csi.configSecretName" . }}
    defaultMode: 0400
{{- if include "pfs-csi.connAuthEnabled" . }}
- name: beegfs-connauth
  secret:
    secretName: {{ include "pfs-csi.connAuthSecretName" . }}
    defaultMode: 0400
{{- end }}
{{- if include "pfs-csi.tlsEnabled" . }}
- name: beegfs-tls
  secret:
    secretName: {{ include "pfs-csi.tlsSecretName" . }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "pfs-csi.configVolumeMounts" -}}
- name: config
  mountPath: /etc/pfs-csi/config
  readOnly: true
{{- if include "pfs-csi.connAuthEnabled" . }}
- name: beegfs-connauth
  mountPath: /etc/pfs-csi/beegfs-connauth
  readOnly: true
{{- end }}
{{- if include "pfs-csi.tlsEnabled" . }}
- name: beegfs-tls
  mountPath: /etc/pfs-csi/beegfs-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Lustre host mount points, Bidirectional (node and controller). */}}
{{- define "pfs-csi.lustreVolumes" -}}
{{- if .Values.lustre.enabled }}
{{- range $i, $path := .Values.lustre.hostMountPoints }}
- name: lustre-mnt-{{ $i }}
  hostPath:
    path: {{ $path }}
    type: DirectoryOrCreate
{{- end }}
{{- end }}
{{- end -}}

{{- define "pfs-csi.lustreVolumeMounts" -}}
{{- if .Values.lustre.enabled }}
{{- range $i, $path := .Values.lustre.hostMountPoints }}
- name: lustre-mnt-{{ $i }}
  mountPath: {{ $path }}
  mountPropagation: Bidirectional
{{- end }}
{{- end }}
{{- end -}}

{{/* Security context of a container that mounts filesystems. Bidirectional
mount propagation is accepted by the API server only for privileged
containers, so privileged is the tightest setting that works; the root
filesystem stays read-only. */}}
{{- define "pfs-csi.mounterSecurityContext" -}}
privileged: true
allowPrivilegeEscalation: true
readOnlyRootFilesystem: true
runAsUser: 0
runAsNonRoot: false
{{- end -}}

{{/* Security context of a sidecar: pass (dict "user" UID "group" GID). */}}
{{- define "pfs-csi.sidecarSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
runAsUser: {{ .user }}
runAsGroup: {{ .group }}
runAsNonRoot: {{ ne (int .user) 0 }}
{{- end -}}

{{/* Leader election of a controller sidecar, in the release namespace. */}}
{{- define "pfs-csi.leaderElectionArgs" -}}
- --leader-election
- --leader-election-namespace=$(POD_NAMESPACE)
- --leader-election-lease-duration={{ .Values.controller.leaderElection.leaseDuration }}
- --leader-election-renew-deadline={{ .Values.controller.leaderElection.renewDeadline }}
- --leader-election-retry-period={{ .Values.controller.leaderElection.retryPeriod }}
{{- end -}}

{{- define "pfs-csi.podNamespaceEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}
