{{/* The chart's name, or nameOverride. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<chart>", else the release
name alone when it already contains the chart's name. At most 50 characters, so Service names
such as "<fullname>-progress" stay within the 63 characters of a DNS label.
*/}}
{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "ferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ include "ferry.chart" . }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end }}

{{/* Labels that select the operator's pods (never change them: Deployment selectors are immutable). */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The selector labels as "k=v,k=v" (FERRY_PROGRESS_POD_LABELS' default). */}}
{{- define "ferry.selectorLabelsFlag" -}}
{{- $pairs := list }}
{{- range $key, $value := include "ferry.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* A label map as "k=v,k=v" (sorted by key). */}}
{{- define "ferry.labelsFlag" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* CIDR blocks with ports ([{cidr, port}]) as the operator's "CIDR:PORT,..." flag value. */}}
{{- define "ferry.egressFlag" -}}
{{- $targets := list }}
{{- range . }}
{{- if contains ":" .cidr }}
{{- $targets = append $targets (printf "[%s]:%d" .cidr (int .port)) }}
{{- else }}
{{- $targets = append $targets (printf "%s:%d" .cidr (int .port)) }}
{{- end }}
{{- end }}
{{- join "," $targets }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to appVersion. */}}
{{- define "ferry.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The progress API's Service name. */}}
{{- define "ferry.progressService" -}}
{{- printf "%s-progress" (include "ferry.fullname" .) }}
{{- end }}

{{/* The DNS names the progress certificate covers. */}}
{{- define "ferry.progressDnsNames" -}}
{{- $service := include "ferry.progressService" . }}
{{- $namespace := .Release.Namespace }}
- {{ $service }}
- {{ printf "%s.%s" $service $namespace }}
- {{ printf "%s.%s.svc" $service $namespace }}
- {{ printf "%s.%s.svc.%s" $service $namespace .Values.clusterDomain }}
{{- end }}

{{/* The URL runners dial the progress API at. */}}
{{- define "ferry.progressUrl" -}}
{{- printf "https://%s.%s.svc:8443" (include "ferry.progressService" .) .Release.Namespace }}
{{- end }}

{{/* The Secret holding the progress API's certificate. */}}
{{- define "ferry.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.secretName: name the Secret with tls.crt and tls.key when tls.mode is secret" .Values.tls.secretName }}
{{- else }}
{{- default (printf "%s-tls" (include "ferry.fullname" .)) .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/* The Lease's name. */}}
{{- define "ferry.leaseName" -}}
{{- default (include "ferry.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The port Vault listens on, for the operator's own NetworkPolicy: networkPolicy.vault.port, else
the Vault address's port, else 443 for https and 8200 (Vault's default) for http.
*/}}
{{- define "ferry.vaultPort" -}}
{{- if .Values.networkPolicy.vault.port }}
{{- .Values.networkPolicy.vault.port | int }}
{{- else if .Values.vault.address }}
{{- $url := urlParse .Values.vault.address }}
{{- $hostPort := splitList ":" $url.host }}
{{- if and (gt (len $hostPort) 1) (regexMatch "^[0-9]+$" (last $hostPort)) (not (hasSuffix "]" $url.host)) }}
{{- last $hostPort }}
{{- else if eq $url.scheme "https" }}
{{- 443 }}
{{- else }}
{{- 8200 }}
{{- end }}
{{- else }}
{{- 8200 }}
{{- end }}
{{- end }}

{{/*
The rules of the operator's ClusterRole (cluster mode) or of its Role in each watched namespace
(namespaced mode): exactly the calls the operator makes.
*/}}
{{- define "ferry.rbacRules" -}}
- apiGroups: ["ferry.dev"]
  resources: ["migrationjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ferry.dev"]
  resources: ["migrationjobs/status"]
  verbs: ["patch"]
- apiGroups: ["ferry.dev"]
  resources: ["credentialbindings"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ferry.dev"]
  resources: ["credentialbindings/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "deletecollection"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "create", "patch", "deletecollection"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch", "deletecollection"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "deletecollection"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
