{{- define "procession.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "procession.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "procession.labels" -}}
app.kubernetes.io/name: {{ include "procession.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "procession.selector" -}}
app.kubernetes.io/name: {{ include "procession.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "procession.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "procession.saslSecret" -}}
{{- .Values.kafka.sasl.existingSecret | default (printf "%s-kafka" (include "procession.fullname" .)) -}}
{{- end -}}

{{- define "procession.checks" -}}
{{- if not .Values.app }}{{ fail "set app: the MODULE:APP every pod runs" }}{{ end -}}
{{- if not .Values.kafka.bootstrapServers }}{{ fail "set kafka.bootstrapServers" }}{{ end -}}
{{- if and .Values.topics.partitions (gt (int .Values.processor.replicas) (int .Values.topics.partitions)) -}}
{{- fail (printf "processor.replicas (%d) is more than topics.partitions (%d): the extra processors would sit idle" (int .Values.processor.replicas) (int .Values.topics.partitions)) -}}
{{- end -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.existingSecret) (not .Values.kafka.sasl.username) -}}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.sasl.username and password, or kafka.sasl.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The environment every container gets: broker, security, tracing, extras. */}}
{{- define "procession.env" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  valueFrom: {configMapKeyRef: {name: {{ include "procession.fullname" . }}, key: bootstrapServers}}
- name: KAFKA_SECURITY_PROTOCOL
  valueFrom: {configMapKeyRef: {name: {{ include "procession.fullname" . }}, key: securityProtocol}}
- name: PROCESSION_KAFKA_CLIENT
  value: {{ .Values.kafka.client | default "librdkafka" | quote }}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ include "procession.saslSecret" . }}, key: username}}
- name: KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "procession.saslSecret" . }}, key: password}}
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: KAFKA_SSL_CAFILE
  value: /etc/procession/kafka-tls/ca.crt
{{- end }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  valueFrom: {configMapKeyRef: {name: {{ include "procession.fullname" . }}, key: otelEndpoint}}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otel.samplerArg | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "procession.tlsVolume" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret: {secretName: {{ .Values.kafka.tls.existingSecret }}}
{{- end }}
{{- end -}}

{{- define "procession.tlsMount" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/procession/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}
