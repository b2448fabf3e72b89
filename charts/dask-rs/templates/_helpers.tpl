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

{{/* The Secret holding the gateway's own Hub API token, or "" unless auth is jupyterhub. */}}
{{- define "dask-rs.hubTokenSecret" -}}
{{- $auth := .Values.gateway.auth -}}
{{- if eq $auth.type "jupyterhub" -}}
{{- $auth.jupyterhub.apiTokenSecret | default (printf "%s-gateway-hub-token" (include "dask-rs.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{/* The gateway Service's DNS name inside the cluster, and its one port. */}}
{{- define "dask-rs.gatewayHostPort" -}}
{{- printf "%s-gateway.%s.svc.%s:%v" (include "dask-rs.fullname" .) .Release.Namespace .Values.gateway.clusterDomain .Values.gateway.service.port -}}
{{- end -}}

{{/* The DASK_GATEWAY__* environment a notebook needs for Gateway() with no
arguments, as a YAML map (the client ConfigMap, NOTES.txt). */}}
{{- define "dask-rs.clientEnv" -}}
{{- $g := .Values.gateway -}}
{{- $hostPort := include "dask-rs.gatewayHostPort" . -}}
{{- $address := $g.client.address | default (printf "http://%s%s" $hostPort $g.prefix) -}}
DASK_GATEWAY__ADDRESS: {{ $address | quote }}
DASK_GATEWAY__PROXY_ADDRESS: {{ printf "gateway://%s" $hostPort | quote }}
DASK_GATEWAY__PUBLIC_ADDRESS: {{ $g.client.publicAddress | default $address | quote }}
{{- if eq $g.auth.type "jupyterhub" }}
DASK_GATEWAY__AUTH__TYPE: "jupyterhub"
{{- end }}
{{- range $key, $value := $g.client.clusterOptions }}
DASK_GATEWAY__CLUSTER__OPTIONS__{{ $key | upper }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
