from cortexcast.cli import main

raise SystemExit(main())
