{{/* The aws-sqs-queue trigger shared by the ScaledObject and the ScaledJob. */}}
{{- define "conveyor.kedaTrigger" -}}
- type: aws-sqs-queue
  name: sqs-depth
  authenticationRef:
    name: {{ include "conveyor.componentName" (dict "root" . "component" "worker") }}
  metadata:
    queueURL: {{ .Values.aws.queue | quote }}
    awsRegion: {{ .Values.aws.region | quote }}
    queueLength: {{ include "conveyor.kedaQueueLength" . | quote }}
    activationQueueLength: {{ .Values.worker.keda.activationQueueLength | quote }}
    scaleOnInFlight: {{ .Values.worker.keda.scaleOnInFlight | quote }}
    scaleOnDelayed: {{ .Values.worker.keda.scaleOnDelayed | quote }}
    {{- with (default .Values.aws.endpointUrl .Values.worker.keda.awsEndpoint) }}
    awsEndpoint: {{ . | quote }}
    {{- end }}
{{- end }}

{{/* A Job may run its tasks to their timeout, plus time to start and hand back. */}}
{{- define "conveyor.jobDeadlineSeconds" -}}
{{- if .Values.worker.scaledJob.activeDeadlineSeconds }}
{{- .Values.worker.scaledJob.activeDeadlineSeconds | int }}
{{- else }}
{{- add (mul (.Values.worker.longestTaskTimeoutSeconds | int) (.Values.worker.scaledJob.tasksPerJob | int)) 300 }}
{{- end }}
{{- end }}
