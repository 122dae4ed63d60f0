"""The matcher: correlates events per household in a Faust table and raises alerts."""
