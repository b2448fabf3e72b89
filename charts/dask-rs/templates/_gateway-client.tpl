{{/* What a JupyterHub and its notebooks need from the gateway: its Hub token's
Secret and the client environment (docs/jupyterhub.md). */}}

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
