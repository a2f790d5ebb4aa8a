{{- define "ebb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ebb.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ebb.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ebb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ebb.secretName" -}}
{{- .Values.secretEnv.existingSecret | default (printf "%s-env" (include "ebb.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by the coordinator and the workers. */}}
{{- define "ebb.commonEnv" -}}
- name: EBB_CONFIG
  value: /etc/ebb/ebb.yaml
- name: EBB_QUEUE_PREFIX
  value: {{ .Values.queuePrefix | quote }}
- name: EBB_LOG
  value: {{ .Values.log.level | quote }}
- name: EBB_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* An environment variable from a key of secretEnv's Secret: required
     unless the release runs without tokens. Call with (list $ NAME KEY). */}}
{{- define "ebb.tokenEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ebb.secretName" $root }}
      key: {{ index . 2 }}
      optional: {{ $root.Values.auth.allowUnauthenticated }}
{{- end -}}
