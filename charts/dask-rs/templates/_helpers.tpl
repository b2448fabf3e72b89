{{/* Names and labels shared by every template. */}}
{{- define "dask-rs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dask-rs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dask-rs.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dask-rs.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* The namespace of the gateway's DaskClusters, Secrets and pods. */}}
{{- define "dask-rs.clusterNamespace" -}}
{{- .Values.gateway.clusterNamespace.name | default .Release.Namespace -}}
{{- end -}}

{{/* A NetworkPolicy peer: the pods of `component` of this release, with
their namespace when the policy lives in another one (the clusters'). */}}
{{- define "dask-rs.peer" -}}
- podSelector:
    matchLabels: {{- include "dask-rs.selector" . | nindent 6 }}
  {{- if ne (include "dask-rs.clusterNamespace" .root) .root.Release.Namespace }}
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: {{ .root.Release.Namespace }}}
  {{- end }}
{{- end -}}

{{/* A limit as TOML: a number or string as is, null (or absent) "unlimited". */}}
{{- define "dask-rs.limit" -}}
{{- $v := index .limits .key -}}
{{- if kindIs "invalid" $v -}}"unlimited"
{{- else if kindIs "string" $v -}}{{ $v | quote }}
{{- else if .integer -}}{{ $v | int }}
{{- else -}}{{ $v | float64 }}
{{- end -}}
{{- end -}}

{{/* A restricted-profile container security context. */}}
{{- define "dask-rs.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* The Secret holding the simple auth's shared password, or "" when none is used. */}}
{{- define "dask-rs.passwordSecret" -}}
{{- $auth := .Values.gateway.auth -}}
{{- if and (eq $auth.type "simple") (not $auth.allowInsecure) -}}
{{- $auth.passwordSecret | default (printf "%s-gateway-password" (include "dask-rs.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{/* The Secret whose key `secret` seals session cookies (shared by the replicas). */}}
{{- define "dask-rs.cookieSecret" -}}
{{- .Values.gateway.auth.cookieSecret | default (printf "%s-gateway-cookie" (include "dask-rs.fullname" .)) -}}
{{- end -}}

{{/* A value as inline TOML (one line): maps as inline tables with quoted
keys, lists as arrays, strings quoted as JSON (valid TOML basic strings),
whole numbers as integers (Helm reads every YAML number as a float). Null
map entries are left out (TOML has no null). */}}
{{- define "dask-rs.toml" -}}
{{- $v := . -}}
{{- if kindIs "map" $v -}}
{ {{- $first := true -}}
{{- range $k, $x := $v -}}
{{- if not (kindIs "invalid" $x) -}}
{{- if not $first }}, {{ end -}}
{{- $first = false -}}
{{- toJson $k }} = {{ include "dask-rs.toml" $x -}}
{{- end -}}
{{- end -}} }
{{- else if kindIs "slice" $v -}}
[{{- range $i, $x := $v -}}{{- if $i }}, {{ end -}}{{- include "dask-rs.toml" $x -}}{{- end -}}]
{{- else if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- if and (eq $v (floor $v)) (lt $v 1e15) (gt $v -1e15) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else -}}
{{- fail (printf "cannot write %v (%s) in the gateway's TOML config" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* `key = value` lines for the values in .values named by .keys
("camelCase=snake_case" pairs), skipping unset ones (null, "", {} or []). */}}
{{- define "dask-rs.tomlKeys" -}}
{{- $values := .values -}}
{{- range .keys -}}
{{- $pair := splitList "=" . -}}
{{- $name := first $pair -}}
{{- if hasKey $values $name -}}
{{- $v := index $values $name -}}
{{- if not (or (kindIs "invalid" $v) (and (or (kindIs "string" $v) (kindIs "map" $v) (kindIs "slice" $v)) (empty $v))) }}
{{ last $pair }} = {{ include "dask-rs.toml" $v }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod keys of the gateway's Kubernetes backend, global and per profile. */}}
{{- define "dask-rs.podKeys" -}}
{{- list "imagePullPolicy=image_pull_policy" "imagePullSecrets=image_pull_secrets" "nodeSelector=node_selector" "tolerations=tolerations" "affinity=affinity" "volumes=volumes" "volumeMounts=volume_mounts" "serviceAccount=service_account" "labels=labels" "annotations=annotations" "schedulerCores=scheduler_cores" "schedulerMemory=scheduler_memory" "schedulerCoresLimit=scheduler_cores_limit" "schedulerMemoryLimit=scheduler_memory_limit" "schedulerExtraPodConfig=scheduler_extra_pod_config" "schedulerExtraContainerConfig=scheduler_extra_container_config" "workerExtraPodConfig=worker_extra_pod_config" "workerExtraContainerConfig=worker_extra_container_config" | join "," -}}
{{- end -}}
