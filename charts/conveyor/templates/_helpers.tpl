{{/*
Names, labels and shared pod parts. Object names are capped at 63 characters (DNS labels).
*/}}

{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.fullname" -}}
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

{{/* A component's object name: <fullname>-<component>, short enough for a label value. */}}
{{- define "conveyor.componentName" -}}
{{- printf "%s-%s" (include "conveyor.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ include "conveyor.chart" . }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: conveyor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "conveyor.componentLabels" -}}
{{ include "conveyor.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "conveyor.componentSelectorLabels" -}}
{{ include "conveyor.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The service account of the api, worker and init pods. */}}
{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conveyor.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "conveyor.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conveyor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap the operator writes tasktypes.json into, mounted by api and worker. */}}
{{- define "conveyor.tasktypesConfigMap" -}}
{{- include "conveyor.componentName" (dict "root" . "component" "tasktypes") }}
{{- end }}

{{- define "conveyor.authSecretName" -}}
{{- default (include "conveyor.componentName" (dict "root" . "component" "auth")) .Values.auth.existingSecret }}
{{- end }}

{{/* "true" when the render can read the cluster (helm install/upgrade), empty under
`helm template` and GitOps renders, where lookup returns an empty map. A live list always
carries `items`; listing Secrets of the release namespace is what Helm's own release
storage already needs. */}}
{{- define "conveyor.clusterReachable" -}}
{{- if hasKey (lookup "v1" "Secret" .Release.Namespace "") "items" }}true{{ end }}
{{- end }}

{{/* Auth is on unless turned off with an explicit boolean false. */}}
{{- define "conveyor.authEnabled" -}}
{{- if eq (toString .Values.auth.enabled) "true" }}true
{{- else if eq (toString .Values.auth.enabled) "false" }}
{{- else }}{{ fail "auth.enabled must be true or false: API authentication is only turned off explicitly" }}
{{- end }}
{{- end }}

{{/* On SIGTERM: running tasks get the longest task timeout to finish. */}}
{{- define "conveyor.shutdownGraceSeconds" -}}
{{- .Values.worker.longestTaskTimeoutSeconds | int }}
{{- end }}

{{/* Kubernetes must wait out the current long poll, the grace and the hand-back of messages. */}}
{{- define "conveyor.terminationGracePeriodSeconds" -}}
{{- add (include "conveyor.shutdownGraceSeconds" . | int) (.Values.worker.pollWaitSeconds | int) 15 }}
{{- end }}

{{- define "conveyor.kedaQueueLength" -}}
{{- if .Values.worker.keda.queueLength }}
{{- .Values.worker.keda.queueLength | int }}
{{- else if eq .Values.worker.mode "scaledJob" }}
{{- .Values.worker.scaledJob.tasksPerJob | int }}
{{- else }}
{{- .Values.worker.concurrency | int }}
{{- end }}
{{- end }}

{{/*
The SQS queue of a priority level, as the processes and KEDA see it: aws.queueHigh /
aws.queueLow, else aws.queue with -high / -low appended (conveyor/lanes.py derives the same).
Called with (dict "root" $ "level" "high").
*/}}
{{- define "conveyor.queueOf" -}}
{{- $aws := .root.Values.aws }}
{{- if eq .level "normal" }}
{{- $aws.queue }}
{{- else }}
{{- $given := ternary $aws.queueHigh $aws.queueLow (eq .level "high") }}
{{- default (printf "%s-%s" (trimSuffix "/" $aws.queue) .level) $given }}
{{- end }}
{{- end }}

{{/* Environment every Conveyor process shares: AWS resources and common settings. */}}
{{- define "conveyor.env" -}}
- name: AWS_REGION
  value: {{ .Values.aws.region | quote }}
{{- with .Values.aws.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- $high := include "conveyor.queueOf" (dict "root" . "level" "high") }}
{{- $low := include "conveyor.queueOf" (dict "root" . "level" "low") }}
{{- if or (eq $high .Values.aws.queue) (eq $low .Values.aws.queue) (eq $high $low) }}
{{- fail "aws.queueHigh, aws.queue and aws.queueLow must name three different queues, one per priority level (KEDA would count a shared queue once per level)" }}
{{- end }}
- name: CONVEYOR_QUEUE
  value: {{ .Values.aws.queue | quote }}
- name: CONVEYOR_QUEUE_URL_HIGH
  value: {{ $high | quote }}
- name: CONVEYOR_QUEUE_URL_LOW
  value: {{ $low | quote }}
- name: CONVEYOR_DLQ
  value: {{ .Values.aws.dlq | quote }}
- name: CONVEYOR_TABLE
  value: {{ .Values.aws.table | quote }}
- name: CONVEYOR_STATUS_SHARDS
  value: {{ .Values.aws.statusShards | quote }}
- name: CONVEYOR_BUCKET
  value: {{ .Values.aws.bucket | quote }}
- name: CONVEYOR_TASKTYPES
  value: /etc/conveyor/tasktypes
- name: CONVEYOR_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: CONVEYOR_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
- name: CONVEYOR_VISIBILITY_TIMEOUT
  value: {{ .Values.config.visibilityTimeout | quote }}
- name: CONVEYOR_MAX_RECEIVE_COUNT
  value: {{ .Values.config.maxReceiveCount | quote }}
- name: CONVEYOR_RETENTION_SECONDS
  value: {{ .Values.config.retentionSeconds | quote }}
- name: CONVEYOR_MAX_PAYLOAD_BYTES
  value: {{ .Values.config.maxPayloadBytes | quote }}
- name: CONVEYOR_MAX_BATCH_SIZE
  value: {{ .Values.config.maxBatchSize | quote }}
- name: CONVEYOR_REDISPATCH_AFTER_SECONDS
  value: {{ .Values.config.redispatchAfterSeconds | quote }}
- name: CONVEYOR_STATS_CACHE_SECONDS
  value: {{ .Values.config.statsCacheSeconds | quote }}
- name: CONVEYOR_POLL_WAIT_SECONDS
  value: {{ .Values.worker.pollWaitSeconds | quote }}
{{- end }}

{{/* OpenTelemetry: the standard OTEL_* variables of an api or worker container. Call with
(dict "root" $ "component" "api"). Without an endpoint the process exports nothing. */}}
{{- define "conveyor.otelEnv" -}}
{{- $otel := .root.Values.otel }}
{{- with $otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" $otel.serviceName .component | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $otel.sampleRatio | toString | quote }}
- name: OTEL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,k8s.pod.name=$(OTEL_POD_NAME),service.version=%s" .root.Release.Namespace .root.Chart.AppVersion | quote }}
{{- with $otel.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* envFrom of a container: the AWS keys from a Secret (when not using IRSA / EKS Pod
Identity), then the component's own `envFrom` entries. Call with the root context, or with
(dict "root" $ "values" .Values.api) for a component with `envFrom` values; "aws" false
leaves the AWS keys out (the operator talks to Kubernetes only). */}}
{{- define "conveyor.envFrom" -}}
{{- $args := hasKey . "root" | ternary . (dict "root" .) }}
{{- $sources := list }}
{{- if ne (toString $args.aws) "false" }}
{{- with $args.root.Values.aws.credentials.existingSecret }}
{{- $sources = append $sources (dict "secretRef" (dict "name" .)) }}
{{- end }}
{{- end }}
{{- with $args.values }}
{{- $sources = concat $sources (.envFrom | default list) }}
{{- end }}
{{- with $sources }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A component's `extraVolumeMounts` / `extraVolumes`, as list items to append. */}}
{{- define "conveyor.extraVolumeMounts" -}}
{{- with .extraVolumeMounts }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "conveyor.extraVolumes" -}}
{{- with .extraVolumes }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "conveyor.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "conveyor.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* The writable /tmp that a read-only root filesystem needs. */}}
{{- define "conveyor.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* The registry ConfigMap belongs to the operator, which creates it; optional, so pods
start before it exists (they treat a missing registry as "not known yet") and pick it up
when kubelet writes it. The chart never renders it: offline renders (helm template, Argo CD)
would otherwise reset it on every sync. */}}
{{- define "conveyor.tasktypesVolume" -}}
- name: tasktypes
  configMap:
    name: {{ include "conveyor.tasktypesConfigMap" . }}
    optional: true
{{- end }}

{{/* Extra handler modules: the workers import them, the operator checks TaskTypes' handlers
against them. Nothing when none are set. */}}
{{- define "conveyor.handlerModulesEnv" -}}
{{- with .Values.handlers.modules }}
- name: CONVEYOR_HANDLER_MODULES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}

{{- define "conveyor.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Scheduling fields of a component: call with the component's values. */}}
{{- define "conveyor.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* With static AWS keys (no IRSA), they arrive as environment variables: boto3 and KEDA
read them by those names. checkov's "secrets as files" check is waived for that case only.
Called with (dict "root" $ "token" true) by a workload that mounts a Kubernetes token on
purpose (the API, for TaskSchedule status), which waives "tokens only where necessary". */}}
{{- define "conveyor.workloadAnnotations" -}}
{{- $args := hasKey . "root" | ternary . (dict "root" .) }}
{{- $staticKeys := $args.root.Values.aws.credentials.existingSecret }}
{{- if or $staticKeys $args.token }}
annotations:
  {{- if $staticKeys }}
  checkov.io/skip1: CKV_K8S_35=Static AWS keys (aws.credentials.existingSecret) are read from the environment by boto3; prefer IRSA
  {{- end }}
  {{- if $args.token }}
  checkov.io/skip2: CKV_K8S_38=The API mounts a token only to patch taskschedules/status (schedules.statusUpdates)
  {{- end }}
{{- end }}
{{- end }}
