package route

// What the external tests (package route_test, which use routetest.Fake)
// need of the package's internals.
var (
	HasRule    = hasRule
	LocalRule  = localRule
	MustMAC    = mustMAC
	SamplePlan = samplePlan
)
