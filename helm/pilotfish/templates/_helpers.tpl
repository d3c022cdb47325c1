{{/*
Named templates of the pilotfish chart.

Every template here takes the chart's scope: `.` inside this chart, and
`.Subcharts.pilotfish` in a chart that has pilotfish as a dependency (see README.md,
"Adding the sidecar to your own Deployment"). So they use .Values, .Release, .Chart and
.Capabilities only, never .Template, and compute names without the caller's chart.
*/}}

{{- define "pilotfish.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pilotfish.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A name derived from the full name, kept within 63 characters: (dict "scope" . "suffix" "x") */}}
{{- define "pilotfish.suffixed" -}}
{{- $full := include "pilotfish.fullname" .scope -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "pilotfish.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pilotfish.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pilotfish.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pilotfish.labels" -}}
helm.sh/chart: {{ include "pilotfish.chart" . }}
{{ include "pilotfish.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pilotfish
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pilotfish.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pilotfish.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pilotfish.configMapName" -}}
{{- include "pilotfish.suffixed" (dict "scope" . "suffix" "config") -}}
{{- end -}}

{{/* repository@digest when image.digest is set (the tag is then not used), else repository:tag. */}}
{{- define "pilotfish.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* "host:port", bracketing an IPv6 host. */}}
{{- define "pilotfish.hostPort" -}}
{{- if contains ":" .host -}}
{{- printf "[%s]:%d" .host (int .port) -}}
{{- else -}}
{{- printf "%s:%d" .host (int .port) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces whose Services and EndpointSlices pilotfish reads, one per line, sorted:
the auto-discovery namespaces (default: the release's) and those of explicit Kubernetes
clusters. Empty when nothing is read from the Kubernetes API.
*/}}
{{- define "pilotfish.discoveryNamespaces" -}}
{{- $namespaces := list -}}
{{- if .Values.discovery.autoDiscover -}}
{{- $namespaces = splitList "\n" (include "pilotfish.autoNamespaces" .) -}}
{{- end -}}
{{- range .Values.clusters -}}
{{- if .kubernetes -}}
{{- $namespaces = append $namespaces (.kubernetes.namespace | default $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- $namespaces | uniq | sortAlpha | join "\n" -}}
{{- end -}}

{{/* "true" when pilotfish reads every namespace (a ClusterRole), "" otherwise. */}}
{{- define "pilotfish.clusterWide" -}}
{{- if and .Values.discovery.autoDiscover (eq .Values.discovery.scope "all") -}}true{{- end -}}
{{- end -}}

{{/*
The pilotfish config (README.md, "Configuration"), as JSON. The admin server listens on
every address so that the kubelet's probes and Prometheus reach it on the pod's IP; the
listener is on loopback in sidecar mode (only the application uses it) and on every address
in gateway mode (the Service sends to it). healthCheck is the default health_check of the
explicit clusters and, through auto_discover.cluster, of every discovered one; explicit
Kubernetes clusters get the release's namespace written out, so that the Role matches.
*/}}
{{- define "pilotfish.config" -}}
{{- $v := .Values -}}
{{- $listenHost := ternary "127.0.0.1" "0.0.0.0" (eq $v.mode "sidecar") -}}
{{- $clusters := list -}}
{{- range $v.clusters -}}
{{- $c := deepCopy . -}}
{{- if and (not (empty $v.healthCheck)) (not (hasKey $c "health_check")) -}}
{{- $_ := set $c "health_check" (deepCopy $v.healthCheck) -}}
{{- end -}}
{{- if hasKey $c "tls" -}}
{{- $t := $c.tls | default dict -}}
{{- if and (include "pilotfish.upstreamCAVolume" $) (not (hasKey $t "ca_file")) -}}
{{- $_ := set $t "ca_file" (printf "/etc/pilotfish-tls/upstream-ca/%s" $v.tls.upstreamCA.key) -}}
{{- end -}}
{{- if and $v.tls.upstreamClientCert.secretName (not (hasKey $t "cert_file")) -}}
{{- $_ := set $t "cert_file" "/etc/pilotfish-tls/upstream-client/tls.crt" -}}
{{- $_ := set $t "key_file" "/etc/pilotfish-tls/upstream-client/tls.key" -}}
{{- end -}}
{{- $_ := set $c "tls" $t -}}
{{- end -}}
{{- if and (hasKey $c "kubernetes") (not (hasKey $c.kubernetes "namespace")) -}}
{{- $_ := set $c.kubernetes "namespace" $.Release.Namespace -}}
{{- end -}}
{{- $clusters = append $clusters $c -}}
{{- end -}}
{{- $listener := dict "name" "main" "address" (include "pilotfish.hostPort" (dict "host" $listenHost "port" $v.ports.listener)) "routes" ($v.routes | default list) -}}
{{- with $v.tls.listener -}}
{{- if .secretName -}}
{{- $tls := dict "certificates" (list (dict "cert_file" "/etc/pilotfish-tls/listener/tls.crt" "key_file" "/etc/pilotfish-tls/listener/tls.key")) "min_version" .minVersion -}}
{{- if .clientCAKey -}}
{{- $_ := set $tls "client_ca_file" (printf "/etc/pilotfish-tls/listener/%s" .clientCAKey) -}}
{{- $_ := set $tls "require_client_cert" .requireClientCert -}}
{{- end -}}
{{- $_ := set $listener "tls" $tls -}}
{{- end -}}
{{- end -}}
{{- $cfg := dict
      "admin" (dict "address" (include "pilotfish.hostPort" (dict "host" "0.0.0.0" "port" $v.ports.admin)))
      "access_log" $v.config.accessLog
      "workers" (int $v.config.workers)
      "drain_timeout" $v.config.drainTimeout
      "listeners" (list $listener)
      "clusters" $clusters -}}
{{- if include "pilotfish.discoveryNamespaces" . -}}
{{- $k8s := dict "cluster_domain" $v.discovery.clusterDomain -}}
{{- if $v.discovery.autoDiscover -}}
{{- $template := deepCopy ($v.discovery.clusterDefaults | default dict) -}}
{{- if and (not (empty $v.healthCheck)) (not (hasKey $template "health_check")) -}}
{{- $_ := set $template "health_check" (deepCopy $v.healthCheck) -}}
{{- end -}}
{{- $auto := dict "namespaces" "all" "mode" $v.discovery.mode -}}
{{- if eq $v.discovery.mode "on_demand" -}}
{{- $_ := set $auto "max_watches_per_namespace" (int $v.discovery.maxWatchesPerNamespace) -}}
{{- end -}}
{{- if not (include "pilotfish.clusterWide" .) -}}
{{- $_ := set $auto "namespaces" (splitList "\n" (include "pilotfish.autoNamespaces" .)) -}}
{{- end -}}
{{- if $template -}}
{{- $_ := set $auto "cluster" $template -}}
{{- end -}}
{{- $_ := set $k8s "auto_discover" $auto -}}
{{- if $v.discovery.httpRoutes -}}
{{- $_ := set $k8s "http_routes" true -}}
{{- $_ := set $k8s "http_routes_recheck" $v.discovery.httpRoutesRecheck -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "kubernetes" $k8s -}}
{{- end -}}
{{- toPrettyJson $cfg -}}
{{- end -}}

{{/* The namespaces auto-discovery reads, one per line, sorted. */}}
{{- define "pilotfish.autoNamespaces" -}}
{{- .Values.discovery.namespaces | default (list .Release.Namespace) | uniq | sortAlpha | join "\n" -}}
{{- end -}}

{{/*
Pod annotations for a pod that runs pilotfish: with config.reload=restart the config
checksum (a config change rolls the pods; with watch, pilotfish reloads the ConfigMap
itself) and, when prometheus.scrape is on, the prometheus.io/* scrape annotations.
*/}}
{{- define "pilotfish.podAnnotations" -}}
{{- if eq .Values.config.reload "restart" }}
checksum/pilotfish-config: {{ include "pilotfish.config" . | sha256sum }}
{{- end }}
{{- if .Values.prometheus.scrape }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.admin | int | quote }}
prometheus.io/path: /stats/prometheus
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The volumes of a pod that runs pilotfish: its config and, when it reads the Kubernetes API,
the service-account token, CA and namespace that the kubelet would otherwise mount into
every container. Projected here and mounted into the pilotfish container alone, the token
that may list Services never reaches the application; the kubelet still rotates it. Then
extraVolumes, which the sidecar's extraVolumeMounts name.
*/}}
{{- define "pilotfish.volumes" -}}
- name: pilotfish-config
  configMap:
    name: {{ include "pilotfish.configMapName" . }}
{{- if include "pilotfish.discoveryNamespaces" . }}
- name: pilotfish-api-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}
{{- with .Values.tls.listener.secretName }}
- name: pilotfish-tls-listener
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.tls.upstreamCA }}
{{- if .secretName }}
- name: pilotfish-tls-upstream-ca
  secret:
    secretName: {{ .secretName }}
{{- else if .configMapName }}
- name: pilotfish-tls-upstream-ca
  configMap:
    name: {{ .configMapName }}
{{- end }}
{{- end }}
{{- with .Values.tls.upstreamClientCert.secretName }}
- name: pilotfish-tls-upstream-client
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "true" when the upstream CA bundle is mounted (from a Secret or a ConfigMap). */}}
{{- define "pilotfish.upstreamCAVolume" -}}
{{- if or .Values.tls.upstreamCA.secretName .Values.tls.upstreamCA.configMapName -}}true{{- end -}}
{{- end -}}

{{/* Environment for the application: its HTTP requests go through pilotfish. */}}
{{- define "pilotfish.appEnv" -}}
{{- $proxy := printf "http://%s" (include "pilotfish.hostPort" (dict "host" "127.0.0.1" "port" .Values.ports.listener)) -}}
- name: http_proxy
  value: {{ $proxy | quote }}
- name: HTTP_PROXY
  value: {{ $proxy | quote }}
- name: no_proxy
  value: "localhost,127.0.0.1"
- name: NO_PROXY
  value: "localhost,127.0.0.1"
{{- end -}}

{{- define "pilotfish.probe" -}}
httpGet:
  path: {{ .path }}
  port: pf-admin
{{ toYaml .settings }}
{{- end -}}

{{/*
The pilotfish container. With sidecar.native (the default) it carries restartPolicy: Always
and belongs in the pod's initContainers (Kubernetes 1.29+); otherwise in its containers.
In gateway mode it also opens the listener port to the Service.
*/}}
{{- define "pilotfish.sidecar" -}}
{{- $native := and (eq .Values.mode "sidecar") .Values.sidecar.native -}}
{{- if and $native (semverCompare "<1.29-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.native needs Kubernetes 1.29 or later (native sidecar containers); this cluster is %s: set sidecar.native=false" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
- name: pilotfish
  image: {{ include "pilotfish.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if $native }}
  restartPolicy: Always
  {{- end }}
  args:
    - --config
    - /etc/pilotfish/pilotfish.json
    - --log-level
    - {{ .Values.config.logLevel }}
    {{- if eq .Values.config.reload "watch" }}
    - --watch-config
    {{- end }}
    {{- with .Values.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: pf-admin
      containerPort: {{ .Values.ports.admin | int }}
      protocol: TCP
    {{- if eq .Values.mode "gateway" }}
    - name: pf-http
      containerPort: {{ .Values.ports.listener | int }}
      protocol: TCP
    {{- end }}
  env:
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    # The node's zone where the PodTopologyLabelsAdmission feature (Kubernetes 1.33+)
    # copies it onto the pod; empty elsewhere (zone-aware routing then needs local_zone).
    - name: NODE_ZONE
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['topology.kubernetes.io/zone']
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    {{- include "pilotfish.probe" (dict "path" "/ready" "settings" .Values.probes.startup) | nindent 4 }}
  readinessProbe:
    {{- include "pilotfish.probe" (dict "path" "/ready" "settings" .Values.probes.readiness) | nindent 4 }}
  livenessProbe:
    {{- include "pilotfish.probe" (dict "path" "/healthz" "settings" .Values.probes.liveness) | nindent 4 }}
  {{- if and (not $native) (gt (int .Values.drain.preStopSeconds) 0) }}
  {{- /* A native sidecar is stopped only after the application has exited: nothing is
         left to wait for. Elsewhere the endpoint removal and the application's own
         shutdown still send requests for a moment. */}}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ .Values.drain.preStopSeconds | int }}"]
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: pilotfish-config
      mountPath: /etc/pilotfish
      readOnly: true
    {{- if include "pilotfish.discoveryNamespaces" . }}
    - name: pilotfish-api-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
    {{- /* whole directories, no subPath: the kubelet's updates of a Secret reach only
           directory mounts, and pilotfish follows them (certificate rotation) */}}
    {{- if .Values.tls.listener.secretName }}
    - name: pilotfish-tls-listener
      mountPath: /etc/pilotfish-tls/listener
      readOnly: true
    {{- end }}
    {{- if include "pilotfish.upstreamCAVolume" . }}
    - name: pilotfish-tls-upstream-ca
      mountPath: /etc/pilotfish-tls/upstream-ca
      readOnly: true
    {{- end }}
    {{- if .Values.tls.upstreamClientCert.secretName }}
    - name: pilotfish-tls-upstream-client
      mountPath: /etc/pilotfish-tls/upstream-client
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The RBAC rules: the verbs and resources pilotfish's discovery uses, nothing more. */}}
{{- define "pilotfish.rbacRules" -}}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- if and .Values.discovery.autoDiscover .Values.discovery.httpRoutes }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end -}}

{{/* The pod-level settings every pod that runs pilotfish shares. */}}
{{- define "pilotfish.podSettings" -}}
serviceAccountName: {{ include "pilotfish.serviceAccountName" . }}
# Only the pilotfish container gets the token (the pilotfish-api-token volume).
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds | int }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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
{{- end -}}

{{/*
What `pilotfish --check-config` would refuse and the schema cannot see, because it spans
values: a failed install says so, instead of a pod that crash-loops. The messages name the
values and follow pilotfish's own.
*/}}
{{- define "pilotfish.validate" -}}
{{- $v := .Values -}}
{{- if and $v.tls.upstreamCA.secretName $v.tls.upstreamCA.configMapName -}}
{{- fail "tls.upstreamCA: give secretName or configMapName, not both" -}}
{{- end -}}
{{- if and $v.tls.listener.requireClientCert (not $v.tls.listener.clientCAKey) -}}
{{- fail "tls.listener.requireClientCert needs tls.listener.clientCAKey: the key of the Secret with the CA of the client certificates" -}}
{{- end -}}
{{- if eq (int $v.ports.listener) (int $v.ports.admin) -}}
{{- fail (printf "ports.listener and ports.admin are both %d: the listener and the admin server need a port each" (int $v.ports.admin)) -}}
{{- end -}}
{{- $names := dict -}}
{{- range $i, $c := $v.clusters -}}
{{- if hasKey $names $c.name -}}
{{- fail (printf "clusters[%d].name: duplicate cluster name %q (also clusters[%s])" $i $c.name (get $names $c.name)) -}}
{{- end -}}
{{- $_ := set $names $c.name (toString $i) -}}
{{- end -}}
{{- range $i, $r := $v.routes -}}
{{- if hasKey $r "mirror" -}}
{{- if not (hasKey $names $r.mirror.cluster) -}}
{{- fail (printf "routes[%d].mirror.cluster: unknown cluster %q" $i $r.mirror.cluster) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $r "clusters" -}}
{{- range $j, $w := $r.clusters -}}
{{- if not (hasKey $names $w.name) -}}
{{- fail (printf "routes[%d].clusters[%d].name: unknown cluster %q" $i $j $w.name) -}}
{{- end -}}
{{- end -}}
{{- else if or (hasKey $r "redirect") (hasKey $r "direct_response") -}}
{{- else if not (hasKey $names $r.cluster) -}}
{{- if $names -}}
{{- fail (printf "routes[%d].cluster: unknown cluster %q; clusters: %s" $i $r.cluster (keys $names | sortAlpha | join ", ")) -}}
{{- else -}}
{{- fail (printf "routes[%d].cluster: unknown cluster %q; routes name clusters of `clusters`, and none is defined" $i $r.cluster) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
