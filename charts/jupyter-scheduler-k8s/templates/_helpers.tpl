{{- /*
  Names and labels. Every resource name comes from a template here, so that a name is written once
  and NOTES.txt, the ConfigMap and the RBAC subjects can never disagree.
*/}}

{{- define "jupyter-scheduler-k8s.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The usual Helm fullname: <release>-<chart>, or just <release> when it already holds the chart name. */}}
{{- define "jupyter-scheduler-k8s.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := .Values.nameOverride | default .Chart.Name }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Cluster-scoped objects are shared by every namespace, so their names carry the release namespace. */}}
{{- define "jupyter-scheduler-k8s.clusterName" -}}
{{- printf "%s-%s" (include "jupyter-scheduler-k8s.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "jupyter-scheduler-k8s.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The jobs gateway's Deployment, Service and (by default) ServiceAccount, in the release namespace. */}}
{{- define "jupyter-scheduler-k8s.gatewayName" -}}
{{- printf "%s-gateway" (include "jupyter-scheduler-k8s.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The ServiceAccount of the jobs gateway: the only identity with rights in the jobs namespace. */}}
{{- define "jupyter-scheduler-k8s.serviceAccountName" -}}
{{- .Values.gateway.serviceAccount.name | default (include "jupyter-scheduler-k8s.gatewayName" .) }}
{{- end }}

{{- /* The username Kubernetes gives requests made with that ServiceAccount's token. */}}
{{- define "jupyter-scheduler-k8s.serviceAccountUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "jupyter-scheduler-k8s.serviceAccountName" .) }}
{{- end }}

{{- define "jupyter-scheduler-k8s.gatewaySelectorLabels" -}}
{{ include "jupyter-scheduler-k8s.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "jupyter-scheduler-k8s.gatewayImage" -}}
{{- $image := .Values.gateway.image }}
{{- printf "%s:%s" $image.name ($image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- /* The URL path the hub's proxy serves the gateway under: /services/<name>/. */}}
{{- define "jupyter-scheduler-k8s.gatewayPrefix" -}}
/services/{{ .Values.gateway.hub.serviceName }}/
{{- end }}

{{- /* Where the hub's proxy sends /services/<name>/ (hub.services.<name>.url). */}}
{{- define "jupyter-scheduler-k8s.gatewayServiceUrl" -}}
http://{{ include "jupyter-scheduler-k8s.gatewayName" . }}.{{ .Release.Namespace }}:{{ .Values.gateway.service.port }}
{{- end }}

{{- /* The gateway's URL as user servers use it (JSK8S_GATEWAY_URL): through the hub's proxy. */}}
{{- define "jupyter-scheduler-k8s.gatewayUserUrl" -}}
{{- .Values.gateway.userUrl | default (printf "http://proxy-public%s" (include "jupyter-scheduler-k8s.gatewayPrefix" .)) }}
{{- end }}

{{- define "jupyter-scheduler-k8s.hubApiUrl" -}}
{{- .Values.gateway.hub.apiUrl | default "http://hub:8081/hub/api" }}
{{- end }}

{{- define "jupyter-scheduler-k8s.configMapName" -}}
{{- printf "%s-config" (include "jupyter-scheduler-k8s.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* Where user servers and the gateway mount the ConfigMap; this directory goes on JUPYTER_CONFIG_PATH. */}}
{{- define "jupyter-scheduler-k8s.configMountPath" -}}
/usr/local/etc/jupyter-scheduler-k8s
{{- end }}

{{- /* Namespace of the notebook jobs. Empty jobs.namespace means "<release namespace>-jobs". */}}
{{- define "jupyter-scheduler-k8s.jobsNamespace" -}}
{{- .Values.jobs.namespace | default (printf "%s-jobs" .Release.Namespace) }}
{{- end }}

{{- define "jupyter-scheduler-k8s.sameNamespace" -}}
{{- if eq (include "jupyter-scheduler-k8s.jobsNamespace" .) .Release.Namespace }}true{{ end }}
{{- end }}

{{- /*
  Prefix of every object name the backend creates (jupyter_scheduler_k8s/kube/names.py: object_name,
  collector_name). The admission policy pins PVC mounts, exec and deletes to it.
*/}}
{{- define "jupyter-scheduler-k8s.objectNamePrefix" -}}
jsk8s-
{{- end }}

{{- /* The label that the backend puts on every PVC, Job and pod it creates (kube/names.py: MANAGED_BY). */}}
{{- define "jupyter-scheduler-k8s.jobPodSelector" -}}
app.kubernetes.io/managed-by: jupyter-scheduler-k8s
{{- end }}

{{- define "jupyter-scheduler-k8s.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jupyter-scheduler-k8s.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* Common labels of every object the chart renders. Pass a dict with "root" and "component". */}}
{{- define "jupyter-scheduler-k8s.labels" -}}
helm.sh/chart: {{ include "jupyter-scheduler-k8s.chart" .root }}
{{ include "jupyter-scheduler-k8s.selectorLabels" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: jupyter-scheduler-k8s
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "jupyter-scheduler-k8s.executorImage" -}}
{{- $image := .Values.executor.image }}
{{- printf "%s:%s" $image.name ($image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{- /*
  A Kubernetes quantity as a string. Helm reads unquoted YAML numbers as float64, and printing
  float64(1000000) gives "1e+06", which is not a quantity: whole numbers go through int64.
*/}}
{{- define "jupyter-scheduler-k8s.quantity" -}}
{{- if kindIs "string" . }}
{{- . }}
{{- else if eq (float64 (int64 .)) (float64 .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{- /*
  Adds cpu_request, cpu_limit, memory_request and memory_limit to .out from a
  {requests: {cpu, memory}, limits: {cpu, memory}} block. Null ones are left out, so that the
  backend's own default applies; "" is kept and means none.
*/}}
{{- define "jupyter-scheduler-k8s.addResources" -}}
{{- $res := .resources | default dict }}
{{- range $kind := list "requests" "limits" }}
{{- $block := get $res $kind | default dict }}
{{- range $resource := list "cpu" "memory" }}
{{- $value := index $block $resource }}
{{- if and (hasKey $block $resource) (not (kindIs "invalid" $value)) }}
{{- $_ := set $.out (printf "%s_%s" $resource (trimSuffix "s" $kind)) (include "jupyter-scheduler-k8s.quantity" $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- /*
  The traitlets JSON config that user servers and the gateway load (jupyter_server_config.json).
  values.yaml keys map one to one onto K8sConfig and GatewayConfig traits
  (jupyter_scheduler_k8s/config.py, gateway/app.py); unset optional values are left out so that the
  trait's own default applies. Nothing in it is secret: user servers read it too.
*/}}
{{- define "jupyter-scheduler-k8s.serverConfig" -}}
{{- $jobs := .Values.jobs }}
{{- $executor := .Values.executor }}
{{- $k8s := dict
  "namespace" (include "jupyter-scheduler-k8s.jobsNamespace" .)
  "image" (include "jupyter-scheduler-k8s.executorImage" .)
  "storage_size" (include "jupyter-scheduler-k8s.quantity" $executor.storage.size)
  "extra_labels" ($jobs.extraLabels | default dict)
  "job_ttl_seconds" (int64 $jobs.ttlSecondsAfterFinished)
  "timeout_seconds" (int64 $jobs.timeoutSeconds)
  "scheduling_timeout_seconds" (int64 $jobs.schedulingTimeoutSeconds)
  "collect_hold_seconds" (int64 $jobs.collectHoldSeconds)
  "output_size_limit" (int64 $jobs.outputSizeLimitBytes)
  "run_log_limit" (int64 $jobs.runLogLimitBytes)
  "schedule_concurrency_policy" .Values.schedules.concurrencyPolicy
  "schedule_starting_deadline_seconds" (int64 .Values.schedules.startingDeadlineSeconds)
  "schedule_runs_kept" (int64 .Values.schedules.runsKept)
  "schedule_run_max_age_seconds" (int64 .Values.schedules.runMaxAgeSeconds)
  "schedule_import_interval_seconds" (int64 .Values.schedules.importIntervalSeconds)
  "definitions_per_user" (int64 .Values.limits.definitionsPerUser)
  "running_jobs_per_user" (int64 .Values.limits.runningJobsPerUser)
  "queued_jobs_per_user" (int64 .Values.limits.queuedJobsPerUser)
  "node_selector" ($executor.nodeSelector | default dict)
  "tolerations" ($executor.tolerations | default list)
  "default_profile" ($executor.defaultProfile | default "")
}}
{{- with $executor.image.pullPolicy }}
{{- $_ := set $k8s "image_pull_policy" . }}
{{- end }}
{{- with $executor.storage.storageClass }}
{{- $_ := set $k8s "storage_class" . }}
{{- end }}
{{- with $jobs.extraAnnotations }}
{{- $_ := set $k8s "extra_annotations" . }}
{{- end }}
{{- include "jupyter-scheduler-k8s.addResources" (dict "resources" $executor.resources "out" $k8s) }}
{{- $profiles := dict }}
{{- range $name, $p := $executor.profiles }}
{{- $profile := dict }}
{{- with $p.description }}{{ $_ := set $profile "description" . }}{{ end }}
{{- include "jupyter-scheduler-k8s.addResources" (dict "resources" $p.resources "out" $profile) }}
{{- if not (kindIs "invalid" $p.gpu) }}{{ $_ := set $profile "gpu" (int64 $p.gpu) }}{{ end }}
{{- with $p.nodeSelector }}{{ $_ := set $profile "node_selector" . }}{{ end }}
{{- with $p.tolerations }}{{ $_ := set $profile "tolerations" . }}{{ end }}
{{- if not (kindIs "invalid" $p.timeoutSeconds) }}{{ $_ := set $profile "timeout_seconds" (int64 $p.timeoutSeconds) }}{{ end }}
{{- $_ := set $profiles $name $profile }}
{{- end }}
{{- $_ := set $k8s "profiles" $profiles }}
{{- with $executor.environments }}
{{- $envs := list }}
{{- range . }}
{{- $env := dict "name" .name "image" .image }}
{{- with .description }}{{ $_ := set $env "description" . }}{{ end }}
{{- $envs = append $envs $env }}
{{- end }}
{{- $_ := set $k8s "environments" $envs }}
{{- end }}
{{- $config := dict
  "ServerApp" (dict "jpserver_extensions" (dict "jupyter_scheduler_k8s" true))
  "SchedulerApp" (dict
    "scheduler_class" "jupyter_scheduler_k8s.scheduler.K8sScheduler"
    "environment_manager_class" "jupyter_scheduler_k8s.environments.K8sEnvironmentManager")
  "Scheduler" (dict
    "execution_manager_class" "jupyter_scheduler_k8s.executors.K8sExecutionManager")
  "K8sConfig" $k8s
  "GatewayConfig" (dict
    "input_size_limit" (int64 .Values.gateway.inputSizeLimitBytes)
    "streams_per_user" (int64 .Values.gateway.streamsPerUser)
    "streams_total" (int64 .Values.gateway.streamsTotal)
    "threads" (int64 .Values.gateway.threads)
    "calls_per_user" (int64 .Values.gateway.callsPerUser)
    "holders_per_user" (int64 .Values.gateway.holdersPerUser)
    "body_limit" (int64 .Values.gateway.bodyLimitBytes)
    "body_timeout_seconds" (int64 .Values.gateway.bodyTimeoutSeconds)
    "idle_seconds" (int64 .Values.gateway.idleSeconds))
}}
{{- toPrettyJson $config }}
{{- end }}

{{- /*
  Checks that the schema cannot express. Each failure names the value to change.
*/}}
{{- define "jupyter-scheduler-k8s.validateValues" -}}
{{- $ns := include "jupyter-scheduler-k8s.jobsNamespace" . }}
{{- if and (include "jupyter-scheduler-k8s.sameNamespace" .) (not .Values.jobs.allowReleaseNamespace) }}
{{- fail (printf "\n\njobs.namespace is the release namespace (%s), where JupyterHub runs. The jobs gateway would get pod, exec and job rights next to the hub's Secret and the users' servers, and notebook jobs would run beside them. Use a separate namespace (the default, jobs.namespace: \"\", gives %s-jobs), or set jobs.allowReleaseNamespace: true to accept that risk." .Release.Namespace .Release.Namespace) }}
{{- end }}
{{- if gt (len $ns) 63 }}
{{- fail (printf "\n\nThe jobs namespace %q is longer than 63 characters. Set jobs.namespace to a shorter name." $ns) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $ns) }}
{{- fail (printf "\n\nThe jobs namespace %q is not a valid namespace name (lowercase letters, digits and '-'). Set jobs.namespace." $ns) }}
{{- end }}
{{- with .Values.executor.defaultProfile }}
{{- if not (hasKey $.Values.executor.profiles .) }}
{{- fail (printf "\n\nexecutor.defaultProfile is %q, but executor.profiles has no such profile (it has: %s)." . (keys $.Values.executor.profiles | sortAlpha | join ", " | default "none")) }}
{{- end }}
{{- end }}
{{- $envNames := list }}
{{- range .Values.executor.environments }}
{{- if has .name $envNames }}
{{- fail (printf "\n\nexecutor.environments has two environments named %q; names must be unique." .name) }}
{{- end }}
{{- $envNames = append $envNames .name }}
{{- end }}
{{- with .Values.gateway.pdb }}
{{- if and .enabled (eq (typeIs "<nil>" .maxUnavailable) (typeIs "<nil>" .minAvailable)) }}
{{- fail "\n\ngateway.pdb needs exactly one of maxUnavailable and minAvailable (set the other to null)." }}
{{- end }}
{{- end }}
{{- if and .Values.resourceQuota.enabled (not .Values.resourceQuota.hard) }}
{{- fail "\n\nresourceQuota.enabled is true but resourceQuota.hard is empty. List the limits, for example hard: {pods: \"20\", requests.storage: 50Gi}." }}
{{- end }}
{{- if and .Values.limitRange.enabled (not .Values.limitRange.limits) }}
{{- fail "\n\nlimitRange.enabled is true but limitRange.limits is empty. Give at least one LimitRangeItem, for example a Container default." }}
{{- end }}
{{- end }}
