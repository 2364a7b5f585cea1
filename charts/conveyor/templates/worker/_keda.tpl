{{/*
The IAM role the workers' service account carries for IRSA (`eks.amazonaws.com/role-arn`),
or nothing. KEDA's identityOwner=workload reads exactly this annotation.
*/}}
{{- define "conveyor.workerRoleArn" -}}
{{- if .Values.serviceAccount.create }}
{{- $annotations := .Values.serviceAccount.annotations | default dict }}
{{- default (get $annotations "eks.amazonaws.com/role-arn") .Values.aws.roleArn }}
{{- end }}
{{- end }}

{{/*
How KEDA authenticates to SQS, one of:
  workload  podIdentity aws, identityOwner workload: KEDA assumes the role annotated on the
            workers' service account (IRSA);
  keda      podIdentity aws, identityOwner keda: KEDA's own IRSA / EKS Pod Identity role;
  roleArn   podIdentity aws with a roleArn KEDA assumes with its own identity;
  secret    static keys from aws.credentials.existingSecret (secretTargetRef);
  none      no TriggerAuthentication: keys from the worker container's environment.
Fails on a combination KEDA's resolver (pkg/scaling/resolver, pkg/scalers/aws) rejects.
*/}}
{{- define "conveyor.kedaAuthMode" -}}
{{- $auth := .Values.worker.keda.auth }}
{{- $secret := .Values.aws.credentials.existingSecret }}
{{- if and .Values.aws.credentials.hasSessionToken (not $secret) }}
{{- fail "aws.credentials.hasSessionToken=true describes the Secret in aws.credentials.existingSecret, which is empty: set aws.credentials.existingSecret" }}
{{- end }}
{{- if eq $auth.type "secret" }}
{{- if not $secret }}
{{- fail "worker.keda.auth.type=secret: KEDA reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the Secret named by aws.credentials.existingSecret, which is empty: set aws.credentials.existingSecret (or use worker.keda.auth.type=podIdentity)" }}
{{- end }}
{{- if or $auth.roleArn $auth.identityOwner }}
{{- fail "worker.keda.auth.roleArn and worker.keda.auth.identityOwner apply to worker.keda.auth.type=podIdentity only: unset them with worker.keda.auth.type=secret" }}
{{- end }}
secret
{{- else if eq $auth.type "none" }}
{{- $names := list }}
{{- range .Values.worker.extraEnv }}{{ $names = append $names .name }}{{ end }}
{{- if not (or $secret (and (has "AWS_ACCESS_KEY_ID" $names) (has "AWS_SECRET_ACCESS_KEY" $names))) }}
{{- fail "worker.keda.auth.type=none renders no TriggerAuthentication, so KEDA reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the worker container's environment, and the workers have neither: set aws.credentials.existingSecret, or both variables in worker.extraEnv (dummy keys do for LocalStack or moto)" }}
{{- end }}
{{- if or $auth.roleArn $auth.identityOwner }}
{{- fail "worker.keda.auth.roleArn and worker.keda.auth.identityOwner apply to worker.keda.auth.type=podIdentity only: unset them with worker.keda.auth.type=none" }}
{{- end }}
none
{{- else }}
{{- $role := include "conveyor.workerRoleArn" . | trim }}
{{- $owner := $auth.identityOwner }}
{{- if eq $owner "workload" }}
{{- if $auth.roleArn }}
{{- fail "worker.keda.auth.identityOwner=workload takes the role from the workers' service account, and KEDA refuses a roleArn next to it: unset worker.keda.auth.roleArn, or set worker.keda.auth.identityOwner=keda to have KEDA assume that role" }}
{{- end }}
{{- if and .Values.serviceAccount.create (not $role) }}
{{- fail "worker.keda.auth.identityOwner=workload: KEDA reads the role from the eks.amazonaws.com/role-arn annotation of the workers' service account, and it has none. Set aws.roleArn (IRSA); with EKS Pod Identity set worker.keda.auth.identityOwner=keda (KEDA's own role, or worker.keda.auth.roleArn for one it assumes)" }}
{{- end }}
workload
{{- else if $auth.roleArn }}
roleArn
{{- else if or (eq $owner "keda") (not $role) }}
keda
{{- else }}
workload
{{- end }}
{{- end }}
{{- end }}

{{/*
The aws-sqs-queue triggers shared by the ScaledObject and the ScaledJob: one per priority
level, named sqs_<level> (names the scaling formula refers to: expr identifiers, unique in
the object). The ScaledObject sums them (advanced.scalingModifiers), the ScaledJob too
(multipleScalersCalculation: sum).
*/}}
{{- define "conveyor.kedaTrigger" -}}
{{- $mode := include "conveyor.kedaAuthMode" . | trim }}
{{- /* A ScaledJob counts only what a new Job could receive (see worker.scaledJob.*). */}}
{{- $counts := ternary .Values.worker.scaledJob .Values.worker.keda (eq .Values.worker.mode "scaledJob") }}
{{- range $level := list "high" "normal" "low" }}
- type: aws-sqs-queue
  name: sqs_{{ $level }}
  {{- if ne $mode "none" }}
  authenticationRef:
    name: {{ include "conveyor.componentName" (dict "root" $ "component" "worker") }}
  {{- end }}
  metadata:
    queueURL: {{ include "conveyor.queueOf" (dict "root" $ "level" $level) | quote }}
    awsRegion: {{ $.Values.aws.region | quote }}
    queueLength: {{ include "conveyor.kedaQueueLength" $ | quote }}
    activationQueueLength: {{ $.Values.worker.keda.activationQueueLength | quote }}
    scaleOnInFlight: {{ $counts.scaleOnInFlight | quote }}
    scaleOnDelayed: {{ $counts.scaleOnDelayed | quote }}
    {{- with (default $.Values.aws.endpointUrl $.Values.worker.keda.awsEndpoint) }}
    awsEndpoint: {{ . | quote }}
    {{- end }}
    {{- if eq $mode "none" }}
    # No TriggerAuthentication: KEDA resolves these from the scaled pod's container env.
    awsAccessKeyIDFromEnv: AWS_ACCESS_KEY_ID
    awsSecretAccessKeyFromEnv: AWS_SECRET_ACCESS_KEY
    {{- end }}
{{- end }}
{{- end }}

{{/* HPA scaling behavior (autoscaling/v2), for KEDA's HPA and for the chart's own. */}}
{{- define "conveyor.hpaBehavior" -}}
{{- with . }}
behavior:
  {{- toYaml . | nindent 2 }}
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
