{{/*
Every scrape sets `job` to <fullname>-api or <fullname>-worker, the same for ServiceMonitors
and PodMonitors, so alerts and the dashboard can select one release by job and namespace.
*/}}
{{- define "conveyor.apiJob" -}}
{{- include "conveyor.componentName" (dict "root" . "component" "api") }}
{{- end }}

{{- define "conveyor.workerJob" -}}
{{- include "conveyor.componentName" (dict "root" . "component" "worker") }}
{{- end }}

{{/* Scrape endpoint fields shared by ServiceMonitor and PodMonitor: (dict "monitor" ... "job" ...). */}}
{{- define "conveyor.scrapeEndpoint" -}}
path: /metrics
interval: {{ .monitor.interval }}
scrapeTimeout: {{ .monitor.scrapeTimeout }}
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ .job }}
{{- end }}

{{/* "true" when the cluster serves the Prometheus operator's API (`helm template` needs
`--api-versions monitoring.coreos.com/v1` for it): ServiceMonitor, PodMonitor and
PrometheusRule are rendered only then, so enabling them never breaks an install on a
cluster without those CRDs. */}}
{{- define "conveyor.prometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}
