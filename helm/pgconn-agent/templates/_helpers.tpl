{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "pgconn-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "pgconn-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pgconn-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgconn-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgconn-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pgconn-agent.labels" -}}
helm.sh/chart: {{ include "pgconn-agent.chart" . }}
{{ include "pgconn-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgconn-agent
{{- end }}

{{- define "pgconn-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgconn-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgconn-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Paths inside the pod. */}}
{{- define "pgconn-agent.configDir" -}}/etc/pgconn-agent{{- end }}
{{- define "pgconn-agent.credentialsDir" -}}/etc/pgconn-agent/credentials{{- end }}
{{- define "pgconn-agent.otlpCaDir" -}}/etc/pgconn-agent/otlp-ca{{- end }}
{{- define "pgconn-agent.webDir" -}}/etc/pgconn-agent/web{{- end }}

{{/*
A probe adapted to the web config: HTTPS under TLS; under basic auth (which guards every path)
a TCP check unless the probe itself sends an Authorization header.
*/}}
{{- define "pgconn-agent.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if hasKey $probe "httpGet" }}
{{- $headers := dict }}
{{- range $probe.httpGet.httpHeaders | default list }}
{{- $_ := set $headers (lower .name) true }}
{{- end }}
{{- if and .web.basicAuth (not (hasKey $headers "authorization")) }}
{{- $_ := set $probe "tcpSocket" (dict "port" $probe.httpGet.port) }}
{{- $_ := unset $probe "httpGet" }}
{{- else if .web.tls }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Cross-field checks the schema cannot express clearly; each failure names the value to fix.
*/}}
{{- define "pgconn-agent.validate" -}}
{{- $names := dict }}
{{- range $i, $t := .Values.targets }}
{{- if hasKey $names $t.name }}
{{- fail (printf "targets[%d].name: duplicate target name %q" $i $t.name) }}
{{- end }}
{{- $_ := set $names $t.name true }}
{{- if regexMatch "(^|\\s)password\\s*=|://[^/@?]*:[^/@?]*@|[?&]password=" $t.dsn }}
{{- fail (printf "targets[%d].dsn: holds a password; put it in the Secret named by credentials.existingSecret and set targets[%d].passwordKey" $i $i) }}
{{- end }}
{{- if and $t.passwordKey (not $.Values.credentials.existingSecret) }}
{{- fail (printf "targets[%d].passwordKey is set but credentials.existingSecret is empty" $i) }}
{{- end }}
{{- end }}
{{- if and (or .Values.webConfig.tls .Values.webConfig.basicAuth) (not .Values.webConfig.existingSecret) }}
{{- fail "webConfig.tls or webConfig.basicAuth is set but webConfig.existingSecret (holding web.yml) is empty" }}
{{- end }}
{{- if .Values.otlp.enabled }}
{{- if and (not .Values.otlp.endpoint) (not .Values.otlp.existingSecret) }}
{{- fail "otlp.enabled is true but neither otlp.endpoint nor otlp.existingSecret (key endpoint) is set" }}
{{- end }}
{{- if and .Values.otlp.tls.caSecret .Values.otlp.tls.insecure }}
{{- fail "otlp.tls.caSecret and otlp.tls.insecure exclude each other" }}
{{- end }}
{{- end }}
{{- end }}
