{{/* Names: the release name, or <release>-expertbot, within DNS's 63 characters. */}}
{{- define "expertbot.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "expertbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "expertbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "expertbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "expertbot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "expertbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* An image reference: (dict "image" .Values.image "chart" .Chart). */}}
{{- define "expertbot.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .chart.AppVersion | toString) }}
{{- end }}

{{- define "expertbot.adaptersClaim" -}}
{{- .Values.adapters.existingClaim | default (printf "%s-adapters" (include "expertbot.fullname" .)) }}
{{- end }}

{{- define "expertbot.documentsClaim" -}}
{{- .Values.documents.existingClaim | default (printf "%s-documents" (include "expertbot.fullname" .)) }}
{{- end }}

{{- define "expertbot.trainerClaim" -}}
{{- .Values.trainer.persistence.existingClaim | default (printf "%s-trainer-data" (include "expertbot.fullname" .)) }}
{{- end }}

{{/* Environment shared by every expertbot container: the ConfigMap, the optional Secret, and
the database URL from its Secret. */}}
{{- define "expertbot.commonEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "expertbot.fullname" . }}
  {{- if .Values.secrets.existingSecret }}
  - secretRef:
      name: {{ .Values.secrets.existingSecret }}
      optional: true
  {{- end }}
env:
  - name: EXPERTBOT_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ required "database.existingSecret is required: the replicas share a SQL store" .Values.database.existingSecret }}
        key: {{ .Values.database.secretKey }}
{{- end }}

{{/* The trainer's pod spec, for the trainer Deployment and the on-demand Job:
(dict "root" $ "args" (list "jobs") "restartPolicy" "Always" "scheduled" true). */}}
{{- define "expertbot.trainerPodSpec" -}}
{{- $root := .root -}}
{{- $trainer := $root.Values.trainer -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
restartPolicy: {{ .restartPolicy }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: trainer
    image: {{ include "expertbot.image" (dict "image" $trainer.image "chart" $root.Chart) }}
    imagePullPolicy: {{ $trainer.image.pullPolicy }}
    args: {{ toJson .args }}
    {{- include "expertbot.commonEnv" $root | nindent 4 }}
      # QLoRA and the eval gate run in this process, on the GPU.
      - name: EXPERTBOT_MODEL__BACKEND
        value: transformers
      {{- if .scheduled }}
      - name: EXPERTBOT_SCHEDULE__TRAIN
        value: {{ $trainer.schedule.train | quote }}
      # The bots re-sync; the trainer has no /documents and must never sync an empty source.
      - name: EXPERTBOT_SCHEDULE__SYNC
        value: ""
      {{- end }}
      {{- range $name, $value := $trainer.env }}
      - name: {{ $name }}
        value: {{ $value | quote }}
      {{- end }}
    resources:
      {{- toYaml $trainer.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: data
        mountPath: /data
      - name: adapters
        mountPath: /adapters
      - name: dshm
        mountPath: /dev/shm
volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {{ include "expertbot.trainerClaim" $root }}
  - name: adapters
    persistentVolumeClaim:
      claimName: {{ include "expertbot.adaptersClaim" $root }}
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: 2Gi
{{- with $trainer.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $trainer.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $trainer.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
