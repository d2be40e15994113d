//! Word lists of the guard (data only; kept compact, so rustfmt skips this file).

/// Words that negate (apostrophes are dropped before matching: "don't" -> "dont").
pub const NEGATIONS: &[&str] = &[
    "not", "no", "never", "without", "cannot", "none", "nobody", "nothing", "neither", "nor",
    "nowhere", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "cant",
    "couldnt", "shouldnt", "wouldnt", "havent", "hasnt", "hadnt", "mustnt", "neednt", "aint",
    "stop", "avoid", "prevent",
];

/// Number words and ordinals, as the digits they stand for.
pub const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"),
    ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"),
    ("twelve", "12"), ("thirteen", "13"), ("fourteen", "14"), ("fifteen", "15"), ("sixteen", "16"),
    ("seventeen", "17"), ("eighteen", "18"), ("nineteen", "19"), ("twenty", "20"), ("thirty", "30"),
    ("forty", "40"), ("fifty", "50"), ("sixty", "60"), ("seventy", "70"), ("eighty", "80"),
    ("ninety", "90"), ("hundred", "100"), ("thousand", "1000"), ("million", "1000000"),
    ("billion", "1000000000"), ("first", "1"), ("second", "2"), ("third", "3"), ("fourth", "4"),
    ("fifth", "5"), ("sixth", "6"), ("seventh", "7"), ("eighth", "8"), ("ninth", "9"),
    ("tenth", "10"), ("half", "0.5"), ("twice", "2"), ("double", "2"), ("triple", "3"),
    ("dozen", "12"), ("single", "1"), ("pair", "2"), ("couple", "2"),
];

/// Terms that change the answer even when written in lower case.
pub const KEY_TERMS: &[&str] = &[
    // languages and runtimes
    "python", "java", "javascript", "typescript", "rust", "golang", "ruby", "php", "swift",
    "kotlin", "scala", "perl", "haskell", "c", "c++", "c#", "sql", "bash", "powershell", "html",
    "css", "json", "yaml", "xml", "csv", "markdown", "react", "vue", "angular", "django", "flask",
    "node", "deno", "docker", "kubernetes", "postgres", "postgresql", "mysql", "sqlite", "mongodb",
    "redis",
    // platforms
    "windows", "linux", "macos", "mac", "ios", "android", "ubuntu", "debian", "iphone", "ipad",
    "chrome", "firefox", "safari", "aws", "azure", "gcp",
    // units and currencies
    "celsius", "fahrenheit", "kelvin", "km", "kilometers", "kilometres", "miles", "meters",
    "metres", "feet", "inches", "cm", "mm", "kg", "kilograms", "pounds", "lbs", "grams", "ounces",
    "liters", "litres", "gallons", "cups", "usd", "eur", "gbp", "jpy", "dollars", "euros", "yen",
    "bitcoin", "percent", "hours", "minutes", "seconds", "days", "weeks", "months", "years",
    "bytes", "kb", "mb", "gb", "tb",
    // dates
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
    "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "today", "tomorrow", "yesterday", "tonight", "morning", "evening",
    "afternoon", "weekend", "weekday", "next", "last", "previous", "current", "past", "future",
    // people and roles that change advice
    "child", "children", "kid", "kids", "baby", "adult", "adults", "dog", "dogs", "cat", "cats",
    "male", "female", "men", "women", "beginner", "beginners", "expert", "experts",
    // languages people write in
    "english", "french", "german", "spanish", "italian", "portuguese", "chinese", "japanese",
    "korean", "russian", "arabic", "hindi", "dutch",
];

/// Pairs of words that ask for opposite things.
pub const OPPOSITES: &[(&str, &str)] = &[
    ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"), ("buy", "sell"),
    ("enable", "disable"), ("add", "remove"), ("add", "delete"), ("open", "close"),
    ("start", "stop"), ("start", "end"), ("before", "after"), ("minimum", "maximum"),
    ("min", "max"), ("upload", "download"), ("import", "export"), ("encrypt", "decrypt"),
    ("encode", "decode"), ("login", "logout"), ("hot", "cold"), ("cheap", "expensive"),
    ("best", "worst"), ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
    ("fastest", "slowest"), ("longest", "shortest"), ("oldest", "newest"), ("oldest", "youngest"),
    ("first", "last"), ("up", "down"), ("on", "off"), ("include", "exclude"), ("accept", "reject"),
    ("allow", "block"), ("allow", "deny"), ("win", "lose"), ("debit", "credit"), ("lend", "borrow"),
    ("north", "south"), ("east", "west"), ("push", "pull"), ("send", "receive"),
    ("upgrade", "downgrade"), ("subscribe", "unsubscribe"), ("lock", "unlock"),
    ("install", "uninstall"), ("mount", "unmount"), ("pros", "cons"),
    ("advantages", "disadvantages"), ("benefits", "risks"), ("true", "false"),
    ("ascending", "descending"), ("asc", "desc"), ("positive", "negative"), ("gain", "lose"),
    ("gain", "loss"), ("profit", "loss"), ("more", "less"), ("more", "fewer"), ("above", "below"),
    ("over", "under"), ("inside", "outside"), ("left", "right"),
    ("input", "output"), ("client", "server"), ("frontend", "backend"),
    ("sync", "async"), ("synchronous", "asynchronous"), ("private", "public"), ("early", "late"),
    ("earlier", "later"), ("cheaper", "pricier"), ("faster", "slower"), ("bigger", "smaller"),
    ("larger", "smaller"), ("higher", "lower"), ("better", "worse"), ("legal", "illegal"),
    ("safe", "unsafe"), ("healthy", "unhealthy"), ("cancel", "renew"), ("cancel", "book"),
    ("refund", "charge"), ("join", "leave"), ("hire", "fire"), ("arrive", "depart"),
    ("arrival", "departure"), ("merge", "split"), ("compress", "decompress"),
    ("zip", "unzip"), ("attach", "detach"), ("connect", "disconnect"), ("follow", "unfollow"),
    ("like", "dislike"), ("agree", "disagree"), ("approve", "reject"), ("pass", "fail"),
    ("success", "failure"), ("sunrise", "sunset"), ("winter", "summer"), ("spring", "autumn"),
    ("spring", "fall"), ("wet", "dry"), ("light", "dark"), ("day", "night"), ("white", "black"),
    ("uppercase", "lowercase"), ("horizontal", "vertical"), ("row", "column"), ("rows", "columns"),
    ("encrypted", "decrypted"), ("open", "closed"), ("opened", "closed"), ("on", "off"),
];

/// Quantifiers that change the scope of a question.
pub const SCOPE: &[&str] = &[
    "all", "every", "each", "some", "any", "only", "both", "either", "most", "least", "few", "many",
    "several", "entire", "whole", "partial", "total", "average", "per", "daily", "weekly",
    "monthly", "yearly", "annual", "annually", "hourly", "always", "sometimes", "usually", "rarely",
    "plural", "singular", "specific", "general", "overall",
];

/// Capitalised words that start sentences and are not names.
pub const COMMON_CAPITALISED: &[&str] = &[
    "what", "whats", "how", "hows", "why", "when", "where", "which", "who", "whom", "whose", "can",
    "could", "would", "should", "will", "shall", "may", "might", "must", "do", "does", "did", "is",
    "are", "was", "were", "am", "be", "have", "has", "had", "please", "i", "im", "ive", "id", "ill",
    "my", "me", "we", "our", "you", "your", "it", "its", "this", "that", "these", "those", "there",
    "here", "the", "a", "an", "and", "or", "but", "so", "if", "in", "on", "at", "for", "to", "from",
    "of", "with", "by", "about", "tell", "give", "show", "explain", "describe", "list", "write",
    "make", "create", "help", "find", "get", "let", "lets", "summarize", "summarise", "translate",
    "convert", "compare", "calculate", "define", "suggest", "recommend", "provide", "generate",
    "check", "track", "cancel", "reset", "change", "update", "delete", "remove", "add", "set",
    "turn", "send", "book", "order", "buy", "sell", "is", "hi", "hello", "hey", "thanks", "thank",
    "ok", "okay", "yes", "no", "not", "dont", "never", "any", "some", "all", "every", "each", "one",
    "two", "three", "best", "good", "quick", "simple", "short", "brief", "again", "also", "now",
    "then", "just", "only", "could", "need", "want", "looking", "trying", "having", "using", "use",
    "in", "into", "after", "before", "during", "while", "since", "until", "without", "within",
    "name", "pick", "choose", "recommend", "draft", "rewrite", "rephrase", "fix", "debug", "im",
    "i'm", "whats", "what's", "how's", "where's", "who's", "can't", "don't", "won't",
];

/// Words that carry no content of their own for the substitution check.
pub const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "my", "your", "our", "their", "his", "her",
    "its", "me", "i", "you", "we", "they", "it", "he", "she", "them", "us", "is", "are", "was",
    "were", "be", "been", "being", "am", "do", "does", "did", "doing", "have", "has", "had", "can",
    "could", "would", "should", "will", "shall", "may", "might", "must", "what", "whats", "which",
    "who", "whom", "whose", "when", "where", "wheres", "why", "how", "hows", "of", "in", "on", "at",
    "for", "to", "from", "with", "by", "about", "into", "onto", "as", "and", "or", "but", "so",
    "if", "than", "then", "there", "here", "please", "some", "any", "way", "ways", "steps", "step",
    "process", "right", "best", "good", "tell", "give", "show", "explain", "describe", "list",
    "write", "compose", "draft", "create", "make", "suggest", "recommend", "share", "provide",
    "help", "get", "let", "lets", "want", "need", "like", "know", "find", "take", "put", "go",
    "use", "using", "also", "just", "really", "simple", "simply", "terms", "short", "brief",
    "briefly", "quick", "quickly", "possible", "im", "ive", "id", "hi", "hello", "hey", "thanks",
    "thank", "ok", "okay", "kind", "sort", "one", "ones", "thing", "things", "something",
    "anything", "like", "happen", "happens", "mean", "means", "meaning", "called", "name",
    "purpose", "used", "work", "works", "difference", "different", "differ", "differs", "between",
    "versus", "vs", "compare", "compared", "main", "some", "give", "me", "people", "new", "idea",
    "ideas", "tips", "tip", "advice", "calculate", "convert", "turn", "start", "started", "learn",
];

/// Same-meaning words the substitution check treats as one (first word is the canonical one).
pub const SYNONYMS: &[&[&str]] = &[
    &["change", "update", "modify", "edit", "alter"], &["remove", "delete", "erase"],
    &["buy", "purchase"], &["begin", "start", "commence"], &["fix", "repair", "correct", "solve"],
    &["big", "large", "huge"], &["small", "little", "tiny"], &["fast", "quick", "rapid"],
    &["car", "vehicle", "automobile"], &["tyre", "tire"], &["colour", "color"], &["mom", "mother"],
    &["dad", "father"], &["plane", "airplane", "aeroplane", "aircraft"], &["movie", "film"],
    &["contact", "reach"], &["cost", "price"], &["holiday", "vacation"], &["shop", "store"],
    &["reserve", "book"], &["combine", "merge", "join"], &["display", "show"],
    &["author", "writer", "wrote", "written"], &["top", "best", "greatest"], &["cook", "prepare"],
    &["make", "build", "create", "construct"], &["picture", "photo", "image"], &["error", "bug"],
    &["happy", "glad"], &["answer", "reply", "respond"],
];
