{{/* Names, labels and the pieces every pod shares. */}}

{{- define "tunestack.fullname" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "tunestack.labels" -}}
app.kubernetes.io/name: tunestack
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: tunestack.selector (dict "ctx" $ "component" "api") */}}
{{- define "tunestack.selector" -}}
app.kubernetes.io/name: tunestack
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* {registry}{prefix}/{role}:{tag}, or @digest where image.digests names one. */}}
{{- define "tunestack.image" -}}
{{- $v := .ctx.Values.image -}}
{{- $digest := index ($v.digests | default dict) .role | default "" -}}
{{- if $digest -}}
{{- printf "%s%s/%s@%s" $v.registry $v.prefix .role $digest -}}
{{- else -}}
{{- printf "%s%s/%s:%s" $v.registry $v.prefix .role $v.tag -}}
{{- end -}}
{{- end -}}

{{- define "tunestack.keysSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-keys" (include "tunestack.fullname" .)) -}}
{{- end -}}

{{/* Pod-level security: non-root (a high uid), no service-account token. */}}
{{- define "tunestack.podSecurity" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "tunestack.fullname" . }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.podSecurity.runAsUser }}
  runAsGroup: {{ .Values.podSecurity.runAsUser }}
  fsGroup: {{ .Values.podSecurity.runAsUser }}
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container-level security: read-only root, no privilege, no capabilities. */}}
{{- define "tunestack.containerSecurity" -}}
securityContext:
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  privileged: false
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* The environment of every Tunestack process (API, worker, jobs). */}}
{{- define "tunestack.env" -}}
{{- $name := include "tunestack.fullname" . -}}
- name: TUNESTACK_HOME
  value: /data/tunestack
- name: TUNESTACK_DEFAULT_LLM
  value: {{ .Values.models.defaultLlm | quote }}
- name: TUNESTACK_DEFAULT_EMBEDDER
  value: {{ .Values.models.defaultEmbedder | quote }}
{{- if eq .Values.vectorStore.engine "milvus" }}
- name: TUNESTACK_VECTOR_STORE
  value: milvus
- name: TUNESTACK_MILVUS_URI
  value: {{ .Values.vectorStore.milvus.uri | quote }}
{{- with .Values.vectorStore.milvus.tokenSecret }}
- name: TUNESTACK_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: token
{{- end }}
{{- else if eq .Values.vectorStore.engine "chroma" }}
- name: TUNESTACK_CHROMA_URL
  value: http://{{ $name }}-chroma:8000
{{- else }}
{{- fail (printf "vectorStore.engine %q: choose chroma or milvus" .Values.vectorStore.engine) }}
{{- end }}
- name: TUNESTACK_API_URL
  value: http://{{ $name }}-api:{{ .Values.api.service.port }}
- name: TUNESTACK_RAG_LLM_BASE_URL
  value: http://{{ $name }}-llm:8080/v1
- name: OLLAMA_HOST
  value: http://{{ $name }}-llm:8080
- name: HF_HUB_OFFLINE
  value: "1"
- name: HOME
  value: /tmp
- name: TUNESTACK_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tunestack.keysSecret" . }}
      key: api-key
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $name }}-redis
      key: password
- name: TUNESTACK_QUEUE_URL
  value: redis://:$(REDIS_PASSWORD)@{{ $name }}-redis:6379/0
- name: TUNESTACK_RAG_JOB_RETRIES
  value: {{ .Values.queue.retries | quote }}
- name: TUNESTACK_RAG_JOB_TIMEOUT_S
  value: {{ .Values.queue.jobTimeoutSeconds | quote }}
{{- end -}}

{{- define "tunestack.homeVolume" -}}
- name: home
  persistentVolumeClaim:
    claimName: {{ .Values.storage.existingClaim | default (printf "%s-home" (include "tunestack.fullname" .)) }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "tunestack.homeMounts" -}}
- name: home
  mountPath: /data/tunestack
- name: tmp
  mountPath: /tmp
{{- end -}}
