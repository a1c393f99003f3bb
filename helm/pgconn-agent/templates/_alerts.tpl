{{/*
Alert thresholds whose warning level must stay below their critical one (the pairs of
agent/alert_rules.py's ORDERED_PAIRS; tests/test_helm.py keeps them equal).
*/}}
{{- define "pgconn-agent.validateAlerts" -}}
{{- $t := .Values.alerts.thresholds }}
{{- range $pair := list (list "near_limit_ratio" "exhausted_ratio") (list "idle_in_transaction_warning_seconds" "idle_in_transaction_critical_seconds") }}
{{- $low := index $pair 0 }}
{{- $high := index $pair 1 }}
{{- if ge (float64 (index $t $low)) (float64 (index $t $high)) }}
{{- fail (printf "alerts.thresholds.%s: must be below alerts.thresholds.%s (%v >= %v)" $low $high (index $t $low) (index $t $high)) }}
{{- end }}
{{- end }}
{{- end }}
