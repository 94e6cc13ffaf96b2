{{/*
Names. fullname is the release name when it contains the chart's name
("helm install jobreaper": jobreaper-watcher, ..., as the kustomize base names
them), else "<release>-jobreaper".
*/}}
{{- define "jobreaper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobreaper.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "jobreaper.labels" -}}
app.kubernetes.io/part-of: jobreaper
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* A component's selector labels: dict "root" $ "component" "watcher". */}}
{{- define "jobreaper.selector" -}}
app.kubernetes.io/name: {{ include "jobreaper.fullname" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* A component's labels (metadata and pod template). */}}
{{- define "jobreaper.componentLabels" -}}
{{ include "jobreaper.labels" .root }}
app.kubernetes.io/name: {{ include "jobreaper.fullname" .root }}-{{ .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "jobreaper.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Kafka's security settings of one component (dict "root" $ "component" "killer"):
environment variables. The SASL password and the TLS files are mounted
(jobreaper.kafkaVolumeMounts); the username is per service (docs/kafka-acls.md).
*/}}
{{- define "jobreaper.kafkaEnv" -}}
{{- $k := .root.Values.kafka }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: JOBREAPER_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: JOBREAPER_KAFKA_SASL_USERNAME
  value: {{ get $k.sasl.usernames .component | default (printf "%s%s" $k.sasl.usernamePrefix .component) | quote }}
- name: JOBREAPER_KAFKA_SASL_PASSWORD_FILE
  value: /etc/jobreaper/kafka-sasl/password
{{- end }}
{{- if $k.tls.caSecret }}
- name: JOBREAPER_KAFKA_SSL_CAFILE
  value: /etc/jobreaper/kafka-tls/ca/{{ $k.tls.caKey }}
{{- end }}
{{- if $k.tls.clientCertSecret }}
- name: JOBREAPER_KAFKA_SSL_CERTFILE
  value: /etc/jobreaper/kafka-tls/client/tls.crt
- name: JOBREAPER_KAFKA_SSL_KEYFILE
  value: /etc/jobreaper/kafka-tls/client/tls.key
{{- end }}
{{- end }}

{{- define "jobreaper.kafkaVolumeMounts" -}}
{{- $k := .root.Values.kafka }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- {name: kafka-sasl, mountPath: /etc/jobreaper/kafka-sasl, readOnly: true}
{{- end }}
{{- if $k.tls.caSecret }}
- {name: kafka-tls-ca, mountPath: /etc/jobreaper/kafka-tls/ca, readOnly: true}
{{- end }}
{{- if $k.tls.clientCertSecret }}
- {name: kafka-tls-client, mountPath: /etc/jobreaper/kafka-tls/client, readOnly: true}
{{- end }}
{{- end }}

{{- define "jobreaper.kafkaVolumes" -}}
{{- $k := .root.Values.kafka }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ required "kafka.sasl.passwordSecret: a Secret with one password per service is needed with a SASL protocol" $k.sasl.passwordSecret }}
    items: [{key: {{ .component }}, path: password}]
{{- end }}
{{- if $k.tls.caSecret }}
- name: kafka-tls-ca
  secret:
    secretName: {{ $k.tls.caSecret }}
    items: [{key: {{ $k.tls.caKey }}, path: {{ $k.tls.caKey }}}]
{{- end }}
{{- if $k.tls.clientCertSecret }}
- name: kafka-tls-client
  secret:
    secretName: {{ $k.tls.clientCertSecret }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end }}

{{/* The container's security settings (Pod Security "restricted"). */}}
{{- define "jobreaper.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Probes of a service on its http port. */}}
{{- define "jobreaper.probes" -}}
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet: {path: /healthz, port: http}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 3
{{- end }}

{{/* Scheduling of a component: dict "values" .Values.watcher. */}}
{{- define "jobreaper.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The dynamic configuration as shipped: config.document plus enforce. */}}
{{- define "jobreaper.configDocument" -}}
{{- $enforce := .Values.enforce }}
{{- if kindIs "bool" $enforce }}
{{- fail "enforce: YAML read a bare off/on as a boolean; quote it: enforce: \"off\" (or \"shadow\", \"on\")" }}
{{- end }}
{{- if not (has $enforce (list "off" "shadow" "on")) }}
{{- fail (printf "enforce: %v is not one of \"off\", \"shadow\", \"on\"" $enforce) }}
{{- end }}
{{- if hasKey .Values.config.document "enforce" }}
{{- fail "config.document.enforce: set the top-level value enforce instead" }}
{{- end }}
{{- $doc := deepCopy .Values.config.document }}
{{- $_ := set $doc "enforce" $enforce }}
{{- toPrettyJson $doc }}
{{- end }}

{{/*
A service's Deployment, PodDisruptionBudget and metrics Service, as the kustomize
base writes them. dict:
  root       $
  component  watcher | killer | executor | config | notify
  values     .Values.<component>
  env        YAML list of the service's own env entries (string)
  ports      YAML list of extra container ports (string)
  mounts     YAML list of extra volumeMounts (string)
  volumes    YAML list of extra volumes (string)
  fsGroup    set the pod's fsGroup (a persistent volume written by uid 10001)
  automount  false: no ServiceAccount token in the pod
  service    the metrics Service's name
  args       the container's args (default "[<component>, run]")
  servicePorts YAML list of extra Service ports (string)
*/}}
{{- define "jobreaper.deployment" -}}
{{- $root := .root }}
{{- $name := printf "%s-%s" (include "jobreaper.fullname" $root) .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "jobreaper.componentLabels" . | nindent 4 }}
spec:
  replicas: {{ .values.replicas }}
  selector:
    matchLabels:
      {{- include "jobreaper.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "jobreaper.componentLabels" . | nindent 8 }}
      annotations:
        # A changed setting restarts the pods (envFrom is read at start only).
        checksum/settings: {{ include (print $root.Template.BasePath "/settings.yaml") $root | sha256sum }}
    spec:
      serviceAccountName: {{ $name }}
      {{- if eq .automount false }}
      automountServiceAccountToken: false
      {{- end }}
      terminationGracePeriodSeconds: 30
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
        {{- if .fsGroup }}
        fsGroup: {{ $root.Values.podSecurityContext.runAsGroup }}
        {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "jobreaper.scheduling" . | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ include "jobreaper.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ .args | default (printf "[%s, run]" .component) }}
          envFrom:
            - configMapRef:
                name: {{ include "jobreaper.fullname" $root }}-settings
          env:
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- include "jobreaper.kafkaEnv" . | nindent 12 }}
            {{- with .values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: 8080
            {{- with .ports }}
            {{- . | nindent 12 }}
            {{- end }}
          {{- include "jobreaper.probes" . | nindent 10 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "jobreaper.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- include "jobreaper.kafkaVolumeMounts" . | nindent 12 }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 16Mi}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- include "jobreaper.kafkaVolumes" . | nindent 8 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "jobreaper.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "jobreaper.selector" . | nindent 6 }}
---
# /metrics (and /healthz, /readyz) for Prometheus.
apiVersion: v1
kind: Service
metadata:
  name: {{ .service }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "jobreaper.componentLabels" . | nindent 4 }}
spec:
  selector:
    {{- include "jobreaper.selector" . | nindent 4 }}
  ports:
    - name: http
      port: 8080
      targetPort: http
    {{- with .servicePorts }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}
