{{/* The chart's name. */}}
{{- define "maos.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart's name unless it contains it. */}}
{{- define "maos.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object gets. */}}
{{- define "maos.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "maos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: maos
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "maos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "maos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "maos.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image. */}}
{{- define "maos.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The rules the operator needs in every namespace it watches (templates/rbac.yaml). */}}
{{- define "maos.watchRules" -}}
- apiGroups: ["maos.dev"]
  resources: ["tasks", "agentpools", "checkpoints"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["maos.dev"]
  resources: ["checkpoints"]
  verbs: ["create", "delete"]
- apiGroups: ["maos.dev"]
  resources: ["tasks/status", "agentpools/status", "checkpoints/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* NetworkPolicy peers where Redis runs. */}}
{{- define "maos.redisPeers" -}}
{{- if .Values.networkPolicy.redisCIDRs }}
{{- range .Values.networkPolicy.redisCIDRs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- else }}
- podSelector:
    matchLabels:
      {{- if not .Values.networkPolicy.redisPodSelector }}
      {{- fail "networkPolicy.redisPodSelector or networkPolicy.redisCIDRs is required" }}
      {{- end }}
      {{- toYaml .Values.networkPolicy.redisPodSelector | nindent 6 }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ default .Release.Namespace .Values.networkPolicy.redisNamespace }}
{{- end }}
{{- end }}
{{/* NetworkPolicy egress to the cluster DNS. */}}
{{- define "maos.dnsEgress" -}}
{{- if .Values.networkPolicy.allowDNS }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}
{{- end }}
