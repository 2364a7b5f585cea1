{{/*
The worker pod, shared by the Deployment and the KEDA ScaledJob. Call with the root context.
*/}}
{{- define "conveyor.workerPod" -}}
metadata:
  labels:
    {{- include "conveyor.componentLabels" (dict "root" . "component" "worker") | nindent 4 }}
    {{- with .Values.worker.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.worker.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "conveyor.serviceAccountName" . }}
  # Workers talk to AWS only; IRSA / Pod Identity inject their own token volume.
  automountServiceAccountToken: false
  {{- if eq .Values.worker.mode "scaledJob" }}
  restartPolicy: Never
  {{- end }}
  # SIGTERM: the current long poll ends, running tasks get the grace, the rest go back.
  terminationGracePeriodSeconds: {{ include "conveyor.terminationGracePeriodSeconds" . }}
  {{- with include "conveyor.imagePullSecrets" . }}{{ . | nindent 2 }}{{ end }}
  {{- include "conveyor.podSecurityContext" . | nindent 2 }}
  {{- with include "conveyor.scheduling" .Values.worker }}{{ . | nindent 2 }}{{ end }}
  containers:
    - name: worker
      image: {{ include "conveyor.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["conveyor", "worker"]
      ports:
        - name: metrics
          containerPort: {{ .Values.worker.metricsPort }}
          protocol: TCP
      env:
        {{- include "conveyor.env" . | nindent 8 }}
        {{- include "conveyor.handlerModulesEnv" . | nindent 8 }}
        - name: CONVEYOR_WORKER_CONCURRENCY
          value: {{ .Values.worker.concurrency | quote }}
        {{- with .Values.worker.priorityWeights }}
        - name: CONVEYOR_PRIORITY_WEIGHTS
          value: {{ printf "high=%d,normal=%d,low=%d" (int .high) (int .normal) (int .low) | quote }}
        {{- end }}
        - name: CONVEYOR_WORKER_METRICS_PORT
          value: {{ .Values.worker.metricsPort | quote }}
        - name: CONVEYOR_SHUTDOWN_GRACE_SECONDS
          value: {{ include "conveyor.shutdownGraceSeconds" . | quote }}
        {{- if eq .Values.worker.mode "scaledJob" }}
        # One-shot: run this many tasks (or stop at the first empty poll), then exit.
        - name: CONVEYOR_WORKER_MAX_TASKS
          value: {{ .Values.worker.scaledJob.tasksPerJob | quote }}
        {{- end }}
        {{- include "conveyor.otelEnv" (dict "root" . "component" "worker") | nindent 8 }}
        {{- with .Values.worker.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with include "conveyor.envFrom" (dict "root" . "values" .Values.worker) }}{{ . | nindent 6 }}{{ end }}
      {{- if ne .Values.worker.mode "scaledJob" }}
      # The worker serves no traffic; these only show that the process is up and serving
      # its metrics. Queue work is proven by the heartbeat in DynamoDB (conveyor_workers).
      readinessProbe:
        httpGet:
          path: /metrics
          port: metrics
        periodSeconds: 30
        timeoutSeconds: 5
      livenessProbe:
        httpGet:
          path: /metrics
          port: metrics
        initialDelaySeconds: 10
        periodSeconds: 30
        timeoutSeconds: 5
        failureThreshold: 3
      {{- end }}
      resources:
        {{- toYaml .Values.worker.resources | nindent 8 }}
      {{- include "conveyor.containerSecurityContext" . | nindent 6 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: tasktypes
          mountPath: /etc/conveyor/tasktypes
          readOnly: true
        {{- if .Values.webhooks.existingSecret }}
        - name: webhook-secrets
          mountPath: /etc/conveyor/webhooks
          readOnly: true
        {{- end }}
        {{- with include "conveyor.extraVolumeMounts" .Values.worker }}{{ . | nindent 8 }}{{ end }}
  volumes:
    {{- include "conveyor.tmpVolume" . | nindent 4 }}
    {{- include "conveyor.tasktypesVolume" . | nindent 4 }}
    {{- with .Values.webhooks.existingSecret }}
    # Completion webhook signing secrets (docs/WEBHOOKS.md); kubelet refreshes them in place.
    - name: webhook-secrets
      secret:
        secretName: {{ . }}
        defaultMode: 0400
    {{- end }}
    {{- with include "conveyor.extraVolumes" .Values.worker }}{{ . | nindent 4 }}{{ end }}
{{- end }}
