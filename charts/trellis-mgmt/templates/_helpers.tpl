{{- define "trellis-mgmt.name" -}}trellis-mgmt{{- end -}}

{{- define "trellis-mgmt.labels" -}}
app.kubernetes.io/name: trellis-mgmt
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "trellis-mgmt.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if and .Values.fips (not (hasSuffix "-fips" $tag)) -}}{{- $tag = printf "%s-fips" $tag -}}{{- end -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}

{{- define "trellis-mgmt.redisHost" -}}
{{- if .Values.ui.auth.oidc.session.redis.host -}}
{{ .Values.ui.auth.oidc.session.redis.host }}
{{- else -}}
trellis-redis.{{ .Release.Namespace }}.svc.cluster.local:6379
{{- end -}}
{{- end -}}

{{- define "trellis-mgmt.secretVolumes" -}}
{{- $volumes := list -}}
{{- if and .Values.relay.disableCaCertGeneration (not .Values.insecure) -}}
{{- $volumes = append $volumes (list "relay-root" .Values.relay.rootTlsSecret.name) -}}
{{- $volumes = append $volumes (list "relay-server" .Values.relay.tlsSecret.name) -}}
{{- if not .Values.relay.disableCa }}{{ $volumes = append $volumes (list "relay-signing" .Values.relay.signingTlsSecret.name) }}{{ end -}}
{{- end -}}
{{- if .Values.meshRootSecret.name }}{{ $volumes = append $volumes (list "mesh-root" .Values.meshRootSecret.name) }}{{ end -}}
{{- if eq .Values.store.backend "etcd" }}{{ $volumes = append $volumes (list "etcd" .Values.store.etcd.tlsSecret.name) }}{{ end -}}
{{- if .Values.ui.auth.enabled }}{{ $volumes = append $volumes (list "oidc" .Values.ui.auth.oidc.clientSecretName) }}{{ end -}}
{{- toJson $volumes -}}
{{- end -}}

{{- define "trellis-mgmt.mounts" -}}
- name: data
  mountPath: /var/lib/trellis
{{- range (include "trellis-mgmt.secretVolumes" . | fromJsonArray) }}
- name: {{ index . 0 }}
  mountPath: /etc/trellis/{{ index . 0 }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "trellis-mgmt.volumes" -}}
{{- if and .Values.store.persistence.enabled (eq .Values.store.backend "redb") }}
- name: data
  persistentVolumeClaim:
    claimName: trellis-mgmt-data
{{- else }}
- name: data
  emptyDir: {}
{{- end }}
{{- range (include "trellis-mgmt.secretVolumes" . | fromJsonArray) }}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 }}
    defaultMode: 0400
{{- end }}
{{- end -}}
