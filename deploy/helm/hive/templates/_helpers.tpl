{{- define "hive.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hive.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hive.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The volumes both containers mount; the watch container reads repositories only. */ -}}
{{- define "hive.mounts" -}}
- {name: config, mountPath: /etc/hive, readOnly: true}
- {name: repos, mountPath: /srv/hive/repos, readOnly: {{ .readOnly }}}
- {name: state, mountPath: /var/lib/hive}
- {name: users, mountPath: /var/lib/extrausers, readOnly: {{ .readOnly }}}
{{- end -}}
