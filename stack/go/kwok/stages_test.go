// Tests of stack/kwok/stages.yaml against kwok's own stage engine: which
// stage a pod matches and after what delay. Run: cd stack/go/kwok && go test ./...
package kwokstages

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/kwok/pkg/apis/internalversion"
	"sigs.k8s.io/kwok/pkg/config"
	"sigs.k8s.io/kwok/pkg/utils/lifecycle"
)

func loadLifecycle(t *testing.T) lifecycle.Lifecycle {
	t.Helper()
	raw, err := os.ReadFile("../../kwok/stages.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var stages []*internalversion.Stage
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		stage, err := config.UnmarshalWithType[*internalversion.Stage](doc)
		if err != nil {
			t.Fatalf("unmarshal stage: %v\n%s", err, doc)
		}
		stages = append(stages, stage)
	}
	if len(stages) != 4 {
		t.Fatalf("want 4 stages, got %d", len(stages))
	}
	lc, err := lifecycle.NewLifecycle(stages)
	if err != nil {
		t.Fatal(err)
	}
	return lc
}

type podOpt func(*corev1.Pod)

func running(startedAgo time.Duration) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP = "10.244.0.2"
		st := metav1.NewTime(time.Now().Add(-startedAgo).Truncate(time.Second))
		p.Status.StartTime = &st
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name:  "main",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}},
		}}
	}
}

func ownedByJob(p *corev1.Pod) {
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "j", UID: "u"}}
}

func deadline(s int64) podOpt {
	return func(p *corev1.Pod) { p.Spec.ActiveDeadlineSeconds = &s }
}

func annotation(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func label(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[k] = v
	}
}

func newPod(opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "pod-uid"},
		Spec: corev1.PodSpec{
			NodeName:   "kwok-node-0",
			Containers: []corev1.Container{{Name: "main", Image: "busybox"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func TestStages(t *testing.T) {
	lc := loadLifecycle(t)
	const never = time.Duration(-1)
	cases := []struct {
		name  string
		pod   *corev1.Pod
		stage string        // "" = no stage matches
		delay time.Duration // expected delay (+-1.5s); never = don't check
	}{
		{"scheduled pod starts", newPod(), "pod-ready", 0},
		{"start delayed", newPod(annotation("pod-ready.stage.kwok.x-k8s.io/delay", "3s")), "pod-ready", 3 * time.Second},
		{"start never", newPod(annotation("pod-ready.stage.kwok.x-k8s.io/delay", "never")), "", never},
		{"job pod completes after 1s by default", newPod(ownedByJob, running(0)), "pod-complete", time.Second},
		{"job pod runs 1m30s", newPod(ownedByJob, running(0), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "1m30s")), "pod-complete", 90 * time.Second},
		{"job pod runs plain seconds", newPod(ownedByJob, running(10*time.Second), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "40")), "pod-complete", 30 * time.Second},
		{"job pod runs 100 years", newPod(ownedByJob, running(0), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "876000h")), "pod-complete", 876000 * time.Hour},
		{"job pod never completes", newPod(ownedByJob, running(0), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "never")), "", never},
		{"bare pod runs for ever", newPod(running(0)), "", never},
		{"completion before deadline", newPod(ownedByJob, running(0), deadline(10), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "5s")), "pod-complete", 5 * time.Second},
		{"deadline before completion", newPod(ownedByJob, running(0), deadline(10), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "20s")), "pod-deadline-exceeded", 11 * time.Second},
		{"deadline wins a tie", newPod(ownedByJob, running(0), deadline(10), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "10s")), "pod-deadline-exceeded", 11 * time.Second},
		{"deadline of never-ending job pod", newPod(ownedByJob, running(2*time.Second), deadline(10), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "never")), "pod-deadline-exceeded", 9 * time.Second},
		{"deadline already past", newPod(ownedByJob, running(100*time.Second), deadline(10), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "never")), "pod-deadline-exceeded", -89 * time.Second},
		{"bare pod deadline", newPod(running(0), deadline(3)), "pod-deadline-exceeded", 4 * time.Second},
		{"ignored deadline (label), job pod completes", newPod(ownedByJob, running(0), deadline(1), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "5s"), label("jobreaper.test/ignore-deadline", "true")), "pod-complete", 5 * time.Second},
		{"ignored deadline (annotation), bare pod runs", newPod(running(0), deadline(1), annotation("jobreaper.test/ignore-deadline", "true")), "", never},
		// The real kubelet never reports a Failed pod whose containers still run: no
		// stage stops them later (kwok writes Failed and terminated together).
		{"a failed pod with running containers is left as it is", func() *corev1.Pod {
			p := newPod(running(0), deadline(1))
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "DeadlineExceeded"
			return p
		}(), "", never},
		{"stopped deadline-failed pod is done", func() *corev1.Pod {
			p := newPod(running(0), deadline(1))
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "DeadlineExceeded"
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}
			return p
		}(), "", never},
		{"graceful deletion completes", func() *corev1.Pod {
			p := newPod(ownedByJob, running(0), annotation("pod-complete.stage.kwok.x-k8s.io/delay", "never"))
			now := metav1.Now()
			grace := int64(30)
			p.DeletionTimestamp = &now
			p.DeletionGracePeriodSeconds = &grace
			return p
		}(), "pod-delete", 0},
		{"graceful deletion delayed", func() *corev1.Pod {
			p := newPod(running(0), annotation("pod-delete.stage.kwok.x-k8s.io/delay", "4s"))
			now := metav1.Now()
			grace := int64(30)
			p.DeletionTimestamp = &now
			p.DeletionGracePeriodSeconds = &grace
			return p
		}(), "pod-delete", 4 * time.Second},
		{"no second delete once grace is 0", func() *corev1.Pod {
			p := newPod(running(0))
			now := metav1.Now()
			grace := int64(0)
			p.DeletionTimestamp = &now
			p.DeletionGracePeriodSeconds = &grace
			p.Finalizers = []string{"example.com/keep"}
			return p
		}(), "", never},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			event := &lifecycle.Event{Labels: tc.pod.Labels, Annotations: tc.pod.Annotations, Data: tc.pod}
			stages, err := lc.ListAllPossible(ctx, event)
			if err != nil {
				t.Fatal(err)
			}
			if tc.stage == "" {
				if len(stages) != 0 {
					t.Fatalf("want no stage, got %s", stages[0].Name())
				}
				return
			}
			if len(stages) != 1 {
				names := []string{}
				for _, s := range stages {
					names = append(names, s.Name())
				}
				t.Fatalf("want exactly stage %s, got %v", tc.stage, names)
			}
			if stages[0].Name() != tc.stage {
				t.Fatalf("want stage %s, got %s", tc.stage, stages[0].Name())
			}
			if tc.delay == never {
				return
			}
			delay, _, err := stages[0].Delay(ctx, event, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if diff := delay - tc.delay; diff > 1500*time.Millisecond || diff < -1500*time.Millisecond {
				t.Fatalf("want delay %s, got %s", tc.delay, delay)
			}
		})
	}
}
