// TypeScript declarations of @rollout/policy (hand-written; they match src/index.js).
// Enum values are spelled as in SPEC and the case files (snake_case).

/** How the rollout chooses repositories beyond the target list. */
export type Strategy = 'percentage' | 'whitelist' | 'repository_size';
/** Size category of a repository, smallest first. */
export type Category = 'test' | 'small' | 'medium' | 'large' | 'enterprise';
/** Who or what started a job. */
export type TriggerSource = 'manual' | 'scheduled' | 'automatic';
/** Where a job runs. */
export type Processor = 'inngest' | 'github_actions';
/** Why a repository is or is not eligible (SPEC §2.2). */
export type EligibilityReason =
  | 'emergency_stop'
  | 'inactive'
  | 'excluded'
  | 'targeted'
  | 'not_targeted'
  | 'in_percentage'
  | 'outside_percentage'
  | 'uncategorized'
  | 'category_included'
  | 'category_excluded';
/** The routing rule that chose the processor (SPEC §2.3). */
export type RouteRule =
  | 'not_eligible'
  | 'recent_data'
  | 'small_pr_batch'
  | 'manual_small_batch'
  | 'historical_range'
  | 'large_batch'
  | 'scheduled_bulk'
  | 'default';
export type HealthLevel = 'ok' | 'warning' | 'critical';
export type HealthAction = 'none' | 'rollback';

export declare const STRATEGIES: readonly Strategy[];
export declare const CATEGORIES: readonly Category[];
export declare const TRIGGER_SOURCES: readonly TriggerSource[];
/**
 * The codes of the batch columns: categories and trigger sources are 1 + their position in
 * `wit/policy.wit` (0 is none); a batch answer's reasons and rules are their WIT positions.
 */
export declare const BATCH_CODES: Readonly<{
  category: Readonly<Record<Category, number>>;
  triggerSource: Readonly<Record<TriggerSource, number>>;
  eligibilityReason: readonly string[];
  routeRule: readonly string[];
}>;
export declare const PROCESSORS: readonly Processor[];

/** A rollout configuration (a `rollout_configuration` row, camelCase). Omitted or null fields take the seed's defaults. */
export interface Config {
  /** Default `'hybrid_progressive_capture'`; part of the hash input; must not be empty. */
  featureName?: string | null;
  /** Integer 0..=100, default 0. */
  rolloutPercentage?: number | null;
  /** Default false: an inactive rollout admits nobody. */
  isActive?: boolean | null;
  /** Repository ids always admitted (unless excluded or stopped), in any UUID form or as text. */
  targetRepositories?: readonly string[] | null;
  /** Repository ids never admitted. */
  excludedRepositories?: readonly string[] | null;
  /** Default `'percentage'`. */
  rolloutStrategy?: Strategy | null;
  /** Error rate in percent (5 means 5 %) above which the rollout is rolled back; 0..=100, default 5. */
  maxErrorRate?: number | null;
  /** Default 24. */
  monitoringWindowHours?: number | null;
  /** Default true. */
  autoRollbackEnabled?: boolean | null;
  /** Default false: a stopped rollout admits nobody. */
  emergencyStop?: boolean | null;
  /** Fewest jobs in the window before a rollback may be decided; default 10. */
  minJobsForRollback?: number | null;
}

/** A configuration with every field filled in. */
export interface EffectiveConfig {
  readonly featureName: string;
  readonly rolloutPercentage: number;
  readonly isActive: boolean;
  readonly targetRepositories: readonly string[];
  readonly excludedRepositories: readonly string[];
  readonly rolloutStrategy: Strategy;
  readonly maxErrorRate: number;
  readonly monitoringWindowHours: number;
  readonly autoRollbackEnabled: boolean;
  readonly emergencyStop: boolean;
  readonly minJobsForRollback: number;
}

/** The seed's configuration: what every omitted field takes. */
export declare const DEFAULT_CONFIG: EffectiveConfig;

/** A repository: its id (a UUID in any form, or any other text) and its category when known. */
export interface Repository {
  id: string;
  category?: Category | null;
}

/** A job to route. Absent (undefined or null) fields are absent; a zero is a value. */
export interface Job {
  jobType?: string | null;
  timeRangeDays?: number | null;
  /** Pull request numbers (numbers or bigints); an empty list counts as absent. */
  prNumbers?: ReadonlyArray<number | bigint> | BigUint64Array | null;
  triggerSource?: TriggerSource | null;
  maxItems?: number | null;
}

export interface RouteRequest {
  repository: Repository | string;
  job?: Job | null;
}

export interface Eligibility {
  eligible: boolean;
  reason: EligibilityReason;
  /** The repository's hash bucket, 0..=99, whatever decided. */
  bucket: number;
}

export interface RouteDecision {
  processor: Processor;
  rule: RouteRule;
  eligible: boolean;
  reason: EligibilityReason;
  bucket: number;
}

export interface RepositoryStats {
  starCount: number;
  contributorCount: number;
  prCount: number;
}

export interface Categorization {
  category: Category;
  /** 100 test … 20 enterprise. */
  priorityLevel: number;
  isTestRepository: boolean;
  /** `min(100, stars + contributors + prs / 10)`. */
  monthlyActivityScore: number;
}

/** Job counts of one processor over the evaluation window (a `rollout_metrics` aggregate). */
export interface ProcessorWindow {
  processorType: Processor;
  successCount: number | bigint;
  errorCount: number | bigint;
  totalJobs: number | bigint;
  /** Mean processing time in milliseconds, when known. */
  averageProcessingTime?: number | null;
}

export interface Health {
  level: HealthLevel;
  action: HealthAction;
  /** `100 × errors / jobs` over the window (0 with no jobs). */
  errorRate: number;
  totalJobs: number;
  /** Why this action, in words. */
  reason: string;
}

/** The part of a decision a check belongs to. */
export type Section = 'eligibility' | 'routing' | 'categorization' | 'health_level' | 'health_action';

/** One check a policy made on the way to a decision. */
export interface Check {
  section: Section;
  /** What the check decides when it holds (a reason, a rule, a category, a level or an action; a policy may add its own names). */
  rule: string;
  /** The condition, in words. */
  condition: string;
  /** The values compared, in words (`'bucket 37 < rollout_percentage 25: no'`). */
  values: string;
  held: boolean;
}

/** A decision with the checks that reached it, in evaluation order; within a section the last held check decided. */
export interface Explained<D> {
  /** Exactly what the function of the same name returns for the same input. */
  decision: D;
  checks: Check[];
}

export interface PolicyInfo {
  name: string;
  version: string;
}

/**
 * Bad input: an unknown field, a wrong type, a value out of range, an unknown enum value
 * (the message lists the allowed values), or a configuration the policy refuses.
 */
export declare class PolicyError extends Error {
  readonly name: 'PolicyError';
  /** The offending field as the caller spells it (camelCase), e.g. `'triggerSource'`. */
  readonly field: string;
  /** Where it is, e.g. `'job.triggerSource'`, `'requests[3].repository.category'`. */
  readonly path: string;
  /** The allowed values (unknown enum value) or fields (unknown field), when there is such a list. */
  readonly allowed?: readonly string[];
  /** Position in a batch, for batch calls. */
  readonly index?: number;
}

/**
 * A configuration checked once by the policy, then used for many decisions.
 *
 * A single decision about a UUID repository, with a job that has neither `jobType` nor
 * `prNumbers`, goes through the component's scalar calls (interface `packed`) when it
 * exports them (`policy.fastPath`); any other single decision through the typed `evaluator`
 * resource; batches through its columns. All give the same answers.
 */
export declare class Evaluator {
  private constructor();
  /** The effective configuration (defaults filled in). */
  readonly config: EffectiveConfig;
  /** Whether a repository takes part in the rollout. */
  isEligible(repository: Repository | string): Eligibility;
  /** Eligibility of many repositories, in order. */
  isEligibleBatch(repositories: ReadonlyArray<Repository | string>): Eligibility[];
  /** Where a job runs. */
  route(repository: Repository | string, job?: Job | null): RouteDecision;
  /** Where many jobs run, in order. */
  routeBatch(requests: ReadonlyArray<RouteRequest>): RouteDecision[];
  /** Free the evaluator inside the component now (otherwise the garbage collector does); idempotent. */
  dispose(): void;
  [Symbol.dispose](): void;
}

/** The loaded policy component. */
export declare class Policy {
  private constructor();
  /**
   * Whether the component exports the scalar calls (interface `packed`), which single
   * decisions about UUID repositories then use; false for a component built without them.
   */
  readonly fastPath: boolean;
  /** Name and version of the policy. */
  info(): PolicyInfo;
  /** Check a configuration and build an evaluator; throws PolicyError. */
  evaluator(config?: Config | null): Evaluator;
  /** Category of a repository from its counts. */
  categorize(stats: RepositoryStats): Categorization;
  /** Health over the window; the configuration is checked as for `evaluator()`. */
  evaluateHealth(config: Config | null | undefined, windows: ReadonlyArray<ProcessorWindow>): Health;
  /** `evaluator(config).isEligible(repository)` with the checks that decided it. */
  explainEligibility(config: Config | null | undefined, repository: Repository | string): Explained<Eligibility>;
  /** `evaluator(config).route(repository, job)` with its checks: eligibility's, then routing's. */
  explainRoute(config: Config | null | undefined, repository: Repository | string, job?: Job | null): Explained<RouteDecision>;
  /** `categorize(stats)` with its checks. */
  explainCategorize(stats: RepositoryStats): Explained<Categorization>;
  /** `evaluateHealth(config, windows)` with its checks: the level's, then the action's. */
  explainHealth(config: Config | null | undefined, windows: ReadonlyArray<ProcessorWindow>): Explained<Health>;
}

/** Load the transpiled component (once; later calls return the same promise). */
export declare function loadPolicy(): Promise<Policy>;

/** A Config from a `rollout_configuration` row (snake_case columns; other columns ignored; DECIMAL strings parsed). */
export declare function configFromRow(row: Record<string, unknown>): Config;

/** The wire form of a repository id the component receives. */
export type RepositoryIdWire = { tag: 'uuid'; val: [bigint, bigint] } | { tag: 'text'; val: string };

/**
 * A UUID (hyphenated in any case, `{braced}` or 32 hex digits) as two u64 halves, most
 * significant first; anything else as text. Throws PolicyError (`field` `'id'`) for a non-string.
 */
export declare function repositoryIdToWire(id: string): RepositoryIdWire;

/** Lowercase hyphenated text for a UUID in any accepted form; any other id as given. Throws PolicyError for a non-string. */
export declare function canonicalRepositoryId(id: string): string;
