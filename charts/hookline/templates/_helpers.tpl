{{/* The release's full name, also the name of every object the chart creates. */}}
{{- define "hookline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hookline.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "hookline.labels" -}}
{{ include "hookline.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookline
{{- end -}}

{{- define "hookline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hookline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hookline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
How the operator and the gateway reach NATS: URL, credentials from the nats.auth Secret (never a
ConfigMap), the CA from nats.tls. Environment entries, then (nats.volumeMounts / nats.volumes)
where the files go.
*/}}
{{/*
Where NATS is: nats.url, or the NATS this release installs (nats.install). Empty: local mode.
*/}}
{{- define "hookline.natsUrl" -}}
{{- if .Values.nats.url -}}
{{ .Values.nats.url }}
{{- else if .Values.nats.install -}}
nats://{{ include "hookline.natsServiceName" . }}.{{ .Release.Namespace }}.svc:4222
{{- end -}}
{{- end -}}

{{/* The NATS chart's Service name, as that chart names it (its fullname). */}}
{{- define "hookline.natsServiceName" -}}
{{- if .Values.nats.fullnameOverride -}}
{{ .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (default "nats" .Values.nats.nameOverride) .Release.Name -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-%s" .Release.Name (default "nats" .Values.nats.nameOverride) | trunc 63 | trimSuffix "-" }}
{{- end -}}
{{- end -}}

{{- define "hookline.natsEnv" -}}
- name: HOOKLINE_NATS_URL
  value: {{ include "hookline.natsUrl" . | quote }}
{{- with .Values.nats.auth.secretName }}
{{- range $var, $key := dict "HOOKLINE_NATS_TOKEN" "token" "HOOKLINE_NATS_USER" "user" "HOOKLINE_NATS_PASSWORD" "password" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef: { name: {{ $.Values.nats.auth.secretName | quote }}, key: {{ $key }}, optional: true }
{{- end }}
{{- end }}
{{- if .Values.nats.auth.credsKey }}
- name: HOOKLINE_NATS_CREDS
  value: /etc/hookline/nats-auth/{{ .Values.nats.auth.credsKey }}
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: HOOKLINE_NATS_CA
  value: /etc/hookline/nats-ca/ca.crt
{{- end }}
{{- end }}

{{/*
The gateway with identities per role: its own identity, which the operator keeps in
<fullname>-gateway-nats and renews (the file is followed), and its own reply inboxes.
*/}}
{{- define "hookline.gatewayIdentityEnv" -}}
- name: HOOKLINE_NATS_URL
  value: {{ include "hookline.natsUrl" . | quote }}
- name: HOOKLINE_NATS_CREDS
  value: /etc/hookline/nats-identity/creds
- name: HOOKLINE_NATS_INBOX
  value: _INBOX_hookline_gateway
{{- if .Values.nats.tls.caSecretName }}
- name: HOOKLINE_NATS_CA
  value: /etc/hookline/nats-ca/ca.crt
{{- end }}
{{- end }}

{{/*
Whether workers and the gateway get identities per role: a signing key or keys Secret was
given, or the operator makes the keys for the NATS this release installs. "true" or empty.
*/}}
{{- define "hookline.identitiesOn" -}}
{{- $ids := .Values.nats.identities -}}
{{- if and (include "hookline.natsUrl" .) (or $ids.signingKeySecretName $ids.keysSecretName (and .Values.nats.install $ids.managed)) -}}
true
{{- end -}}
{{- end -}}

{{/*
The operator with identities per role: the account signing key it issues them with, or the
Secret of Hookline's NATS keys (made by the operator itself for nats.install).
*/}}
{{- define "hookline.identityIssuerEnv" -}}
{{- if .Values.nats.identities.signingKeySecretName }}
- name: HOOKLINE_NATS_SIGNING_KEY
  value: /etc/hookline/nats-signing/seed
- name: HOOKLINE_NATS_ACCOUNT
  valueFrom:
    secretKeyRef: { name: {{ .Values.nats.identities.signingKeySecretName | quote }}, key: account }
{{- else }}
- name: HOOKLINE_NATS_KEYS_SECRET
  value: {{ .Values.nats.identities.keysSecretName | default (printf "%s-nats-keys" .Release.Name) | quote }}
{{- if .Values.nats.install }}
- name: HOOKLINE_NATS_SERVER_SECRET
  value: "{{ .Release.Name }}-nats-server"
{{- end }}
{{- end }}
- name: HOOKLINE_NATS_IDENTITY_LIFETIME
  value: {{ .Values.nats.identities.lifetime | quote }}
- name: HOOKLINE_GATEWAY_NATS_SECRET
  value: {{ include "hookline.fullname" . }}-gateway-nats
{{- end }}

{{- define "hookline.natsVolumeMounts" -}}
{{- if .Values.nats.auth.credsKey }}
- { name: nats-auth, mountPath: /etc/hookline/nats-auth, readOnly: true }
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- { name: nats-ca, mountPath: /etc/hookline/nats-ca, readOnly: true }
{{- end }}
{{- end }}

{{- define "hookline.natsVolumes" -}}
{{- if .Values.nats.auth.credsKey }}
- name: nats-auth
  secret: { secretName: {{ .Values.nats.auth.secretName | quote }} }
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: nats-ca
  secret: { secretName: {{ .Values.nats.tls.caSecretName | quote }} }
{{- end }}
{{- end }}
