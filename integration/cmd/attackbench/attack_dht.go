package main

import "context"

func attackFindValue(ctx context.Context, e *env, s *Summary) Row  { return Row{Err: "todo"} }
func attackReplay(ctx context.Context, e *env, s *Summary) Row     { return Row{Err: "todo"} }
func attackStoreFlood(ctx context.Context, e *env, s *Summary) Row { return Row{Err: "todo"} }
func attackModeA(ctx context.Context, e *env, s *Summary) Row      { return Row{Err: "todo"} }
