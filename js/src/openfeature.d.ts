// TypeScript declarations of @rollout/policy/openfeature (hand-written; they match src/openfeature.js).
import type {
  EvaluationContext,
  JsonValue,
  OpenFeatureEventEmitter,
  Provider,
  ProviderStatus,
  ResolutionDetails,
} from '@openfeature/server-sdk';
import type { EligibilityReason, Policy, RouteRule } from './index.js';

/** The suffix of a feature's routing flag: `F/processor`. */
export declare const PROCESSOR_SUFFIX: '/processor';

/** The OpenFeature reason of an eligibility reason: DISABLED, SPLIT or TARGETING_MATCH. */
export declare function openfeatureReason(reason: EligibilityReason): 'DISABLED' | 'SPLIT' | 'TARGETING_MATCH';
/** The OpenFeature reason of the rule that placed an eligible repository's job: DEFAULT or TARGETING_MATCH. */
export declare function openfeatureRuleReason(rule: RouteRule): 'DEFAULT' | 'TARGETING_MATCH';

/**
 * A policy component's bytes as a `Policy`: transpiled by jco in memory, imported from a
 * temporary directory, checked to speak the WIT this package speaks. Throws, saying why, otherwise.
 */
export declare function policyFromComponent(
  bytes: Uint8Array,
): Promise<{
  policy: Policy;
  /** The transpile, with the worker's start. */
  transpileMs: number;
  /** jco's `transpile()` call alone. */
  jcoMs: number;
  importMs: number;
}>;

export interface RolloutProviderOptions {
  /** The `rollout serve` to follow, e.g. `http://rollout:8080`. */
  baseUrl: string;
  /** The feature (default `hybrid_progressive_capture`): flags `feature` and `feature/processor`. */
  feature?: string;
  /** Reconnect when the event stream has been silent this long (default 45,000 ms; the server sends a keep-alive every 15 s). */
  idleTimeoutMs?: number;
}

/** The last policy component loaded from the server. */
export interface PolicySwap {
  sha256: string;
  /** The component wraps the core module this package ships: no transpile was needed. */
  bundled: boolean;
  fetchMs: number;
  transpileMs?: number;
  /** jco's `transpile()` call alone. */
  jcoMs?: number;
  importMs?: number;
}

export interface SyncStatus {
  /** READY, or STALE: the server is unreachable or its policy could not be loaded (the last good one decides). */
  status: ProviderStatus;
  /** Whether the event stream is up. */
  connected: boolean;
  /** The stored version of the configuration deciding now. */
  configVersion: number;
  /** The sha256 of the policy component deciding now. */
  policySha256: string | null;
  /** Snapshots taken into use (one that equals the one in use, as after a reconnect, is not counted). */
  snapshotsApplied: number;
  /** The last failure (an unreachable server, a refused component), if any; kept after recovery. */
  lastError: string | null;
  lastSwap: PolicySwap | null;
}

/** Context attributes the provider reads (others are ignored). */
export interface RolloutContext extends EvaluationContext {
  /** The repository id (a UUID). */
  targetingKey?: string;
  category?: 'test' | 'small' | 'medium' | 'large' | 'enterprise';
  job_type?: string;
  time_range_days?: number;
  pr_numbers?: number[];
  trigger_source?: 'manual' | 'scheduled' | 'automatic';
  max_items?: number;
}

/** The in-process provider: decides locally with the policy component, following a `rollout serve`. */
export declare class RolloutProvider implements Provider {
  constructor(options: RolloutProviderOptions);
  readonly runsOn: 'server';
  readonly metadata: { readonly name: string };
  readonly events: OpenFeatureEventEmitter;
  readonly hooks: [];
  /** READY, STALE, NOT_READY (before `initialize`) or ERROR (it failed). */
  readonly status: ProviderStatus;
  syncStatus(): SyncStatus;
  initialize(context?: EvaluationContext): Promise<void>;
  onClose(): Promise<void>;
  resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>>;
  resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>>;
  /** Always TYPE_MISMATCH (or FLAG_NOT_FOUND): the flags are a boolean and a string. */
  resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>>;
  /** Always TYPE_MISMATCH (or FLAG_NOT_FOUND). */
  resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>>;
  /**
   * `F` for `context` without the SDK, synchronously; throws the SDK's error classes (FlagNotFoundError, …).
   * For hot paths: the SDK's client (server-sdk 1.23) costs 30–50× this per evaluation by itself.
   */
  booleanDetails(flagKey: string, context?: RolloutContext): ResolutionDetails<boolean>;
  /** `F/processor` for `context` without the SDK, synchronously; throws the SDK's error classes. */
  stringDetails(flagKey: string, context?: RolloutContext): ResolutionDetails<string>;
}
