{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "cropworker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name: the release name, plus the chart name unless the release already has it. */}}
{{- define "cropworker.fullname" -}}
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

{{- define "cropworker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cropworker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cropworker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cropworker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/* The image: the tag defaults to <appVersion>-gpu or <appVersion>-cpu (deploy/Dockerfile). */}}
{{- define "cropworker.image" -}}
{{- $variant := ternary "gpu" "cpu" .Values.gpu.enabled }}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion $variant) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* SIGKILL comes this long after SIGTERM: the worker's drain bound plus a margin for the
     batch in progress, closing the consumer and leaving the group. */}}
{{- define "cropworker.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.config.shutdownTimeoutS | int) .Values.terminationGraceMarginSeconds }}
{{- end }}

{{/* A value as the worker parses it from its environment: lists comma-joined, whole numbers
     without the exponent that YAML's float64 would print (52428800, not 5.24288e+07). */}}
{{- define "cropworker.envValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The worker image of the CPU variant: what the `helm test` pod runs, on any node. */}}
{{- define "cropworker.cpuImage" -}}
{{- $tag := default (printf "%s-cpu" .Chart.AppVersion) .Values.image.tag | replace "-gpu" "-cpu" }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* nodeSelector plus, for a TensorRT engine, the GPU model it was built for. */}}
{{- define "cropworker.nodeSelector" -}}
{{- $selector := deepCopy .Values.nodeSelector }}
{{- if and .Values.gpu.enabled .Values.gpu.product }}
{{- $_ := set $selector "nvidia.com/gpu.product" .Values.gpu.product }}
{{- end }}
{{- toYaml $selector }}
{{- end }}

{{- define "cropworker.kafkaTls" -}}
{{- has .Values.kafka.securityProtocol (list "ssl" "sasl_ssl") }}
{{- end }}

{{- define "cropworker.kafkaSasl" -}}
{{- has .Values.kafka.securityProtocol (list "sasl_plaintext" "sasl_ssl") }}
{{- end }}

{{/* Where the Kafka TLS Secret is mounted in the pod. */}}
{{- define "cropworker.tlsDir" -}}/etc/cropworker/kafka-tls{{- end }}

{{/* Combinations that values.schema.json cannot express; each fails the render. */}}
{{- define "cropworker.validate" -}}
{{- $k := .Values.kafka }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) (int $k.partitions)) }}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds kafka.partitions (%d): a consumer group cannot use more workers than its topic has partitions; lower keda.maxReplicaCount or set kafka.partitions to the topic's real partition count" (int .Values.keda.maxReplicaCount) (int $k.partitions)) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail (printf "keda.minReplicaCount (%d) exceeds keda.maxReplicaCount (%d)" (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- end }}
{{- $sasl := eq (include "cropworker.kafkaSasl" .) "true" }}
{{- if and $sasl (not $k.sasl.mechanism) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism" $k.securityProtocol) }}
{{- end }}
{{- if and $k.sasl.mechanism (not $sasl) }}
{{- fail "kafka.sasl.mechanism is set: kafka.securityProtocol must be sasl_plaintext or sasl_ssl" }}
{{- end }}
{{- if and $sasl (not $k.sasl.existingSecret) }}
{{- fail "SASL needs kafka.sasl.existingSecret: the Secret holding the user name and password" }}
{{- end }}
{{- if and $k.tls.existingSecret (ne (include "cropworker.kafkaTls" .) "true") }}
{{- fail "kafka.tls.existingSecret is set: kafka.securityProtocol must be ssl or sasl_ssl" }}
{{- end }}
{{- if ne (empty $k.tls.certKey) (empty $k.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS)" }}
{{- end }}
{{- if and $k.tls.certKey (not $k.tls.existingSecret) }}
{{- fail "kafka.tls.certKey needs kafka.tls.existingSecret: the Secret holding the certificate" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- if and .Values.keda.enabled (or (gt (int .Values.keda.fallback.replicas) (int .Values.keda.maxReplicaCount)) (lt (int .Values.keda.fallback.replicas) (int .Values.keda.minReplicaCount))) }}
{{- fail (printf "keda.fallback.replicas (%d) must lie between keda.minReplicaCount (%d) and keda.maxReplicaCount (%d)" (int .Values.keda.fallback.replicas) (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- end }}
{{- if and .Values.config.engine (not .Values.gpu.product) }}
{{- fail "config.engine is set: set gpu.product to the GPU model it was built for (node label nvidia.com/gpu.product); a TensorRT engine runs on no other" }}
{{- end }}
{{- if le (float64 .Values.config.loopTimeoutS) (float64 .Values.config.shutdownTimeoutS) }}
{{- fail "config.loopTimeoutS must exceed config.shutdownTimeoutS: a drain must not look like a hung loop" }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` pod: not the selector labels, so no Service, PDB or
     Deployment ever counts it as a worker. */}}
{{- define "cropworker.testLabels" -}}
app.kubernetes.io/name: {{ include "cropworker.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
