{{/*
Hand-written helpers. Names, labels, ports and the TRE_* environment come from
_generated.tpl (written by `python -m provisioner.chart` from the Python planners), so
nothing here repeats a rule of the platform.
*/}}

{{/* An image by repository and tag, or by digest when one is pinned. */}}
{{- define "tre.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end }}

{{/* Labels on every object the chart's own templates make. */}}
{{- define "tre.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: ucloud-tre
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Pod Security `restricted`: every platform pod meets it. */}}
{{- define "tre.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "tre.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{- define "tre.resources" -}}
requests:
  cpu: {{ .cpu | quote }}
  memory: {{ .memory | quote }}
limits:
  cpu: {{ .cpuLimit | quote }}
  memory: {{ .memory | quote }}
{{- end }}

{{/* S3 credentials from a Secret the operator made, when one is named. */}}
{{- define "tre.s3CredentialsEnv" -}}
{{- with . }}
- name: TRE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: access-key-id
- name: TRE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: secret-access-key
{{- end }}
{{- end }}

{{/* The cluster's DNS (kube-dns) as a NetworkPolicy peer: platform pods resolve the API
server's, S3's and the identity provider's names through it; workspaces never do. */}}
{{- define "tre.clusterDnsEgress" -}}
- to:
  - namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: kube-system
    podSelector:
      matchLabels:
        k8s-app: kube-dns
  ports:
  - {protocol: UDP, port: 53}
  - {protocol: TCP, port: 53}
{{- end }}

{{- define "tre.cidrPeers" -}}
{{- range . }}
- ipBlock:
    cidr: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "tre.apiServerEgress" -}}
- to:
  {{- include "tre.cidrPeers" .Values.networkPolicies.apiServerCidrs | nindent 2 }}
  ports:
  {{- range .Values.networkPolicies.apiServerPorts }}
  - {protocol: TCP, port: {{ . }}}
  {{- end }}
{{- end }}

{{- define "tre.s3Egress" -}}
- to:
  {{- include "tre.cidrPeers" .Values.networkPolicies.s3Cidrs | nindent 2 }}
  ports:
  - {protocol: TCP, port: 443}
  - {protocol: TCP, port: 80}
{{- end }}

{{/*
Values that no schema can express: fail with the key and the fix before anything is applied.
*/}}
{{- define "tre.validate" -}}
{{- $platform := list (include "tre.systemNamespace" .) (include "tre.hubNamespace" .) (include "tre.airlockNamespace" .) }}
{{- if has .Release.Namespace $platform }}
{{- fail (printf "release namespace %s: install the release into a namespace of its own (helm install -n tre-release --create-namespace ...); the chart creates and owns %s itself" .Release.Namespace (join ", " $platform)) }}
{{- end }}
{{- if not .Values.controller.auditSigningKeySecret }}
{{- fail "controller.auditSigningKeySecret: name the Secret in tre-system that holds the controller's audit signing key under `signing-key` (docs/operations.md, 'The audit signing key')" }}
{{- end }}
{{- if and .Values.hub.enabled .Values.hub.evaluationPasswordSecret }}
{{- range $key := list "hubOidcIssuer" "hubOidcClientId" "hubOidcCallbackUrl" "hubOidcAllowedGroup" }}
{{- if index $.Values.settings $key }}
{{- fail (printf "settings.%s: hub.evaluationPasswordSecret replaces OIDC (evaluation clusters only); unset one of the two" $key) }}
{{- end }}
{{- end }}
{{- if .Values.hub.oidcClientSecretSecret }}
{{- fail "hub.oidcClientSecretSecret: hub.evaluationPasswordSecret replaces OIDC (evaluation clusters only); unset one of the two" }}
{{- end }}
{{- else if .Values.hub.enabled }}
{{- range $key := list "hubOidcIssuer" "hubOidcClientId" "hubOidcCallbackUrl" "hubOidcAllowedGroup" }}
{{- if not (index $.Values.settings $key) }}
{{- fail (printf "settings.%s: required with hub.enabled (the hub signs people in with OIDC; README 'Install on a cluster')" $key) }}
{{- end }}
{{- end }}
{{- if not .Values.hub.oidcClientSecretSecret }}
{{- fail "hub.oidcClientSecretSecret: name the Secret in tre-hub that holds the hub's OIDC client secret under `client-secret`" }}
{{- end }}
{{- end }}
{{- if and .Values.airlock.enabled (not .Values.hub.enabled) }}
{{- fail "airlock.enabled: the airlock is a JupyterHub service (people sign in through the hub); set hub.enabled too, or airlock.enabled=false" }}
{{- end }}
{{- if .Values.networkPolicies.enabled }}
{{- $egress := list "apiServerCidrs" "s3Cidrs" }}
{{- if and .Values.hub.enabled (not .Values.hub.evaluationPasswordSecret) }}{{ $egress = append $egress "oidcCidrs" }}{{ end }}
{{- range $key := $egress }}
{{- if not (index $.Values.networkPolicies $key) }}
{{- fail (printf "networkPolicies.%s: required: the addresses (CIDRs) the platform's pods may reach there, e.g. [10.0.0.10/32]; there is no default, so no platform pod can send data anywhere else (docs/operations.md, 'Network egress')" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.dns.enabled }}
{{- range $key := list "dns" "hub" "airlock" }}
{{- if not (index $.Values $key).serviceIp }}
{{- fail (printf "%s.serviceIp: required with dns.enabled: a free address of the cluster's Service range (the workspace resolver's table and the notebooks' nameserver are fixed addresses)" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
