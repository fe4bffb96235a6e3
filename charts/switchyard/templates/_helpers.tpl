{{/* Chart name, truncated to a DNS label. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: stable across upgrades. */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
metadata.labels + metadata.annotations of an object: the common ones merged with the object's own.
Call with (dict "ctx" $ "labels" .Values.x.labels "annotations" .Values.x.annotations).
*/}}
{{- define "switchyard.meta" -}}
labels:
  {{- include "switchyard.labels" .ctx | nindent 2 }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $ann := merge (dict) (.annotations | default dict) (.ctx.Values.commonAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules: keep them identical to deploy/rbac/gateway-rbac.yaml (tests/python/test_helm.py
compares them).
*/}}
{{- define "switchyard.rbac.watchRules" -}}
- apiGroups: ["switchyard.dev"]
  resources: ["modelbackends", "airoutes", "aiconsumers", "aibudgets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["switchyard.dev"]
  resources: ["modelbackends/status", "airoutes/status", "aiconsumers/status", "aibudgets/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{- define "switchyard.rbac.tokenReviewRules" -}}
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
{{- end -}}

{{- define "switchyard.rbac.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create", "get", "update"]
{{- end -}}

{{/* The sidecar container (sidecar mode): printed by NOTES.txt, documented in the README. */}}
{{- define "switchyard.sidecarContainer" -}}
- name: switchyard
  image: {{ include "switchyard.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --config={{ .Values.sidecar.mountPath }}
    - --listen=127.0.0.1:{{ .Values.ports.http }}
    - --admin-listen=0.0.0.0:{{ .Values.ports.admin }}
    - --log-format={{ .Values.gateway.logFormat }}
    - --shutdown-delay={{ .Values.gateway.shutdownDelay }}
    - --drain-timeout={{ .Values.gateway.drainTimeout }}
    - --require-auth={{ if .Values.sidecar.requireAuth }}true{{ else }}false{{ end }}
    {{- if not .Values.gateway.accessLog }}
    - --no-access-log
    {{- end }}
  {{- with .Values.sidecar.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - {name: switchyard-adm, containerPort: {{ .Values.ports.admin }}}
  livenessProbe:
    httpGet: {path: /healthz, port: {{ .Values.ports.admin }}}
  readinessProbe:
    httpGet: {path: /readyz, port: {{ .Values.ports.admin }}}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: switchyard-routes
      mountPath: {{ .Values.sidecar.mountPath }}
      readOnly: true
{{- end -}}
