{{/* Chart name. */}}
{{- define "wasmpod.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "wasmpod.fullname" -}}
{{- if contains (include "wasmpod.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "wasmpod.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wasmpod.labels" -}}
app.kubernetes.io/name: {{ include "wasmpod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wasmpod.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wasmpod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wasmpod.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wasmpod.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wasmpod.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Installer arguments shared by install and uninstall. */}}
{{- define "wasmpod.installerArgs" -}}
- --host-root
- /host
- --install-dir
- {{ .Values.installer.shimInstallDir | quote }}
- --flavour
- {{ .Values.installer.flavour | quote }}
{{- with .Values.installer.containerdConfig }}
- --containerd-config
- {{ . | quote }}
{{- end }}
- --cgroup-driver
- {{ .Values.installer.cgroupDriver | quote }}
{{- with .Values.installer.configVersion }}
- --config-version
- {{ . | quote }}
{{- end }}
{{- with .Values.installer.restartCommand }}
- --restart-command
- {{ . | quote }}
{{- end }}
- --probe-timeout
- {{ .Values.installer.probeTimeoutSeconds | quote }}
- --log-level
- {{ .Values.installer.logLevel | quote }}
{{- range $key, $value := .Values.wasmtime }}
- --runtime-option
- {{ printf "%s=%s" $key (toJson $value) | quote }}
{{- end }}
{{- end -}}

{{/* The privileged, hostPID pod spec parts both the DaemonSet and the uninstall hook use. */}}
{{- define "wasmpod.nodePodSpec" -}}
serviceAccountName: {{ include "wasmpod.serviceAccountName" . }}
hostPID: true
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: host-root
    hostPath:
      path: /
      type: Directory
{{- end -}}

{{- define "wasmpod.nodeContainer" -}}
image: {{ include "wasmpod.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
securityContext:
  privileged: true
volumeMounts:
  - name: host-root
    mountPath: /host
    mountPropagation: HostToContainer
resources:
  {{- toYaml .Values.installer.resources | nindent 2 }}
{{- end -}}
