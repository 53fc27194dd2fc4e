{{- define "trellis-agent.labels" -}}
app.kubernetes.io/name: trellis-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
trellis.io/cluster: {{ .Values.cluster | quote }}
{{- end -}}

{{- define "trellis-agent.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if and .Values.fips (not (hasSuffix "-fips" $tag)) -}}{{- $tag = printf "%s-fips" $tag -}}{{- end -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
